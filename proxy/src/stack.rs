//! The request path of one side of the proxy: the stages a request goes through, top-down, each a
//! function that does one thing and hands what it learned to the next through the request's context
//! ([`Ctx`], fixed on arrival) and its [`RequestInfo`] (what the access log will say).
//!
//! ```text
//! pin snapshot -> request id / traceparent -> access log -> local reply (ProxyError -> response)
//!   -> buffer body -> [authorize, inbound] -> route -> fault -> mirror -> timeout -> retry -> forward
//! ```
//!
//! The stages are plain async functions awaited in one another rather than tower layers: a request is
//! one future, built in place by the connection's server (`h1::server`, or hyper's for HTTP/2), instead
//! of a boxed future, a cloned service and a type-map entry per layer (docs/benchmarks.md, proxy).

use crate::authz::RequestAttributes;
use crate::cluster::{Cluster, Picked};
use crate::config::{SharedSnapshot, Snapshot, View};
use crate::error::{BodyTooLarge, ProxyError};
use crate::otlp::{Attributes, SpanData, TraceContext, new_span_id, new_trace_id, span_name, write_hex};
use crate::route::{Action, Matched, RequestView, Route};
use crate::telemetry::{LogEntry, Sample, Telemetry};
use crate::{BoxError, ProxyBody};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use meshlens_model::names::{IstioSni, rsplit_ascii};
use meshlens_model::{Direction, Mtls, Reporter, RequestRecord, SourceFormat, SpiffeId};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

// Header names as constants: a `&str` name passed to `HeaderMap::insert` is copied into a new allocation
// on every request.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// Header an Istio sidecar sends to name its workload (`sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN`).
const PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// Which side of a proxy a request crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Gateway,
    Outbound,
    Inbound,
}

impl Side {
    fn reporter(self) -> Reporter {
        match self {
            Side::Gateway => Reporter::Gateway,
            Side::Outbound => Reporter::Source,
            Side::Inbound => Reporter::Destination,
        }
    }
}

/// Facts about the downstream connection, set by the listener (as `Arc<ConnInfo>`, shared by its requests).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The config port the listener serves (Gateway server port or workload port).
    pub port: u16,
    pub sni: Option<String>,
    pub tls_version: Option<String>,
    /// The client's SPIFFE ID when it authenticated with a mesh certificate.
    pub peer: Option<SpiffeId>,
    /// `peer` as text, formatted once for the connection's requests.
    pub peer_principal: Option<Arc<str>>,
    /// The Istio SNI the client sent (`outbound_.PORT_.SUBSET_.HOST`): the service it meant to reach,
    /// parsed once for the connection's requests.
    pub istio_sni: Option<IstioSni>,
    pub tls: bool,
    /// The header the stack adds to each of the connection's requests, made by its first
    /// ([`connection_header`]).
    pub upstream_header: OnceLock<Option<HeaderValue>>,
}

/// What the stages learn about one request, for the access log.
#[derive(Debug, Default)]
pub struct RequestInfo {
    pub route_name: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream_host: Option<Arc<str>>,
    pub upstream_local: Option<Arc<str>>,
    pub transport_failure: Option<String>,
    pub flags: Vec<&'static str>,
    pub details: Option<String>,
    pub attempts: u32,
    pub upstream_time: Option<Duration>,
    pub bytes_received: u64,
    pub destination_service: Option<Arc<str>>,
    pub destination_port: Option<u16>,
    pub destination_subset: Option<Arc<str>>,
    pub destination_namespace: Option<Arc<str>>,
    pub destination_workload: Option<Arc<str>>,
    pub destination_principal: Option<Arc<str>>,
    pub upstream_mtls: Option<bool>,
}

/// What every stage may read about a request: fixed when it arrives.
struct Ctx {
    conn: Arc<ConnInfo>,
    /// The request keeps this snapshot even if a reload swaps in another meanwhile.
    snapshot: Arc<Snapshot>,
    /// This hop's server span.
    trace: TraceContext,
}

/// The route decision, for the stages below the router.
struct Routed {
    route: Arc<Route>,
    cluster: Arc<Cluster>,
}

/// Who this proxy is, for access-log and metric attribution.
#[derive(Debug, Clone, Default)]
pub struct SelfInfo {
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub principal: Option<Arc<str>>,
}

/// Per-proxy settings the stack needs.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub side: Side,
    pub telemetry: Arc<Telemetry>,
    /// Shared, not cloned: layers hold it for every request.
    pub me: Arc<SelfInfo>,
    pub max_request_body: usize,
    /// Mirror copies in flight; more are dropped rather than queued.
    pub mirror_slots: Arc<tokio::sync::Semaphore>,
}

/// The whole request path for one side of the proxy, shared by its listeners' connections.
pub type HttpService = Arc<Stack>;

/// The request path for one side of the proxy.
pub struct Stack {
    snapshot: SharedSnapshot,
    config: StackConfig,
}

pub fn build(snapshot: SharedSnapshot, config: StackConfig) -> HttpService {
    Arc::new(Stack { snapshot, config })
}

impl Stack {
    /// Serves one request that arrived on `conn`. Never fails: errors become local replies, and every
    /// response is logged when its body ends.
    pub async fn handle<B>(&self, mut request: Request<B>, conn: Arc<ConnInfo>) -> Response<ProxyBody>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let snapshot = self.snapshot.current();
        // Room for the headers the stages add (request id, traceparent, forwarding headers), so that the
        // map grows once rather than header by header.
        request.headers_mut().reserve(4);
        let trace = self.request_ids(request.headers_mut());
        let ctx = Ctx { conn, snapshot, trace };
        let mut pending = PendingLog::start(Some(&request), &ctx, &self.config, started);
        let info = &mut pending.info;
        let response = match self.proxy(&ctx, info, request).await {
            Ok(response) => response,
            Err(error) => local_reply(info, &error),
        };
        pending.status = Some(response.status().as_u16());
        response.map(|inner| LoggedBody { inner, bytes: 0, pending: Some(pending) }.boxed_unsync())
    }

    /// Gives the request an `x-request-id` if it has none, and this hop's span its trace context.
    fn request_ids(&self, headers: &mut http::HeaderMap) -> TraceContext {
        // One lookup per header, for reading and writing (the entry API), on every request.
        let fresh_id = || uuid_v4().ok();
        match headers.entry(X_REQUEST_ID) {
            header::Entry::Occupied(id) if id.get().to_str().is_ok_and(|v| !v.trim().is_empty()) => {}
            header::Entry::Occupied(mut id) => {
                if let Some(fresh) = fresh_id() {
                    id.insert(fresh);
                }
            }
            header::Entry::Vacant(id) => {
                if let Some(fresh) = fresh_id() {
                    id.insert(fresh);
                }
            }
        }
        // This hop's server span continues the caller's trace, or starts one. Sampling is parent-based: a
        // caller's decision stands; a new trace is sampled at the configured ratio when spans are exported.
        let incoming = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceContext::parse_traceparent);
        let trace = match incoming {
            Some((trace_id, parent, sampled)) => {
                TraceContext { trace_id, span_id: new_span_id(), parent_span_id: Some(parent), sampled }
            }
            None => TraceContext {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                parent_span_id: None,
                sampled: self.config.telemetry.otlp().is_some_and(|otlp| otlp.sample_root()),
            },
        };
        // The header itself is written where a request leaves: each upstream attempt names its client span
        // (`forward`), a mirror copy this server span (`mirror`).
        trace
    }

    /// Records a request the HTTP/1 server answered itself because it could not parse it (Envoy's
    /// downstream protocol error, flag `DPE`): an access-log record without method or path, and the
    /// metrics, so that malformed traffic shows in `istio_requests_total` like any other answer.
    pub fn log_rejected(&self, conn: Arc<ConnInfo>, status: StatusCode, details: &'static str) {
        let ctx = Ctx {
            conn,
            snapshot: self.snapshot.current(),
            trace: TraceContext {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                parent_span_id: None,
                sampled: false,
            },
        };
        let mut pending = PendingLog::start::<()>(None, &ctx, &self.config, Instant::now());
        pending.status = Some(status.as_u16());
        pending.info = RequestInfo { flags: vec!["DPE"], details: Some(details.to_owned()), ..RequestInfo::default() };
        pending.finish(0);
    }

    /// Everything below the access log: what can fail with a [`ProxyError`].
    async fn proxy<B>(
        &self,
        ctx: &Ctx,
        info: &mut RequestInfo,
        request: Request<B>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut request = buffer_body(request, self.config.max_request_body, info).await?;
        if self.config.side == Side::Inbound {
            authorize(ctx, &request)?;
        }
        self.route(ctx, info, &mut request).await
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

// ---------------------------------------------------------------------------------------------------------
// Outer stages (the request as it arrived)

/// A random (version 4) UUID in its 36-character form, as a header value (one allocation): this runs for
/// every request that arrives without an id.
fn uuid_v4() -> Result<HeaderValue, header::InvalidHeaderValue> {
    // Version 4 in the high nibble of byte 6, the RFC 4122 variant in the high bits of byte 8.
    let bits = (fastrand::u128(..) & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut id = *b"00000000-0000-0000-0000-000000000000";
    for (digits, shift) in [(0..8, 96), (9..13, 80), (14..18, 64), (19..23, 48), (24..36, 0)] {
        write_hex(&mut id[digits], (bits >> shift) as u64);
    }
    HeaderValue::from_bytes(&id)
}

/// A header value for a count (attempts, milliseconds): below 1,000 a shared one, where formatting a new
/// value allocates on every request.
fn count_value(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..1000u64).map(HeaderValue::from).collect());
    usize::try_from(n).ok().and_then(|i| SMALL.get(i)).cloned().unwrap_or_else(|| HeaderValue::from(n))
}

/// Whole milliseconds, as Envoy logs durations.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The order Envoy prints response flags in.
const FLAG_ORDER: [&str; 20] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "NC",
];

/// Who sent a request, as the metrics and the access log name it.
enum Source {
    /// Outbound and at a gateway: this proxy's own workload.
    Me(Arc<SelfInfo>),
    /// Inbound: the authenticated peer of the connection, if any, and the workload its sidecar named when
    /// that matches it.
    Peer { workload: Option<String>, conn: Arc<ConnInfo> },
}

impl Source {
    /// (workload, namespace, principal).
    fn names(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        match self {
            Source::Me(me) => (me.workload.as_deref(), me.namespace.as_deref(), me.principal.as_deref()),
            Source::Peer { workload, conn } => {
                (workload.as_deref(), conn.peer.as_ref().map(SpiffeId::namespace), conn.peer_principal.as_deref())
            }
        }
    }
}

/// A request's telemetry waiting for the response body to end: its metrics sample, and its access-log
/// record when something reads records.
struct PendingLog {
    side: Side,
    source: Source,
    /// What only the access log and OTLP read, filled in only when one of them will: it costs a dozen
    /// allocations per request, and the metrics need none of it. Boxed: the record is most of a kilobyte,
    /// and the pending log moves through several owners.
    record: Option<Box<RequestRecord>>,
    /// The response's status, once its head is known.
    status: Option<u16>,
    /// Filled in by the stages as the request goes through them.
    info: RequestInfo,
    started: Instant,
    trace: TraceContext,
    telemetry: Arc<Telemetry>,
}

impl PendingLog {
    /// Starts the telemetry of `request`, or (`None`) of one the server rejected before it was parsed.
    fn start<B>(request: Option<&Request<B>>, ctx: &Ctx, config: &StackConfig, started: Instant) -> PendingLog {
        let header = |name: &str| request?.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let conn = &ctx.conn;
        let trace = ctx.trace;
        let source = match config.side {
            Side::Inbound => {
                // The client's workload comes from the peer metadata id its sidecar sent, trusted only
                // when it names the namespace of the certificate the client authenticated with.
                let peer = conn.peer.as_ref();
                let metadata = request
                    .and_then(|r| r.headers().get(PEER_METADATA_ID))
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_peer_id);
                let metadata = metadata.filter(|(_, ns)| peer.is_some_and(|p| p.namespace() == *ns));
                Source::Peer { workload: metadata.map(|(workload, _)| workload.to_owned()), conn: Arc::clone(conn) }
            }
            _ => Source::Me(config.me.clone()),
        };
        let record = config.telemetry.records_wanted().then(|| {
            Box::new(RequestRecord {
                timestamp: chrono::Utc::now(),
                method: request.map(|r| r.method().to_string()),
                path: request.and_then(|r| r.uri().path_and_query()).map(|p| p.to_string()),
                protocol: request.map(|r| format!("{:?}", r.version())),
                authority: request.and_then(|r| r.uri().authority()).map(|a| a.to_string()).or_else(|| header("host")),
                request_id: header("x-request-id"),
                trace_id: Some(format!("{:032x}", trace.trace_id)),
                span_id: Some(format!("{:016x}", trace.span_id)),
                user_agent: header("user-agent"),
                x_forwarded_for: header("x-forwarded-for"),
                downstream_local_address: Some(conn.local.to_string()),
                downstream_remote_address: Some(conn.remote.to_string()),
                requested_server_name: conn.sni.clone(),
                tls_version: conn.tls_version.clone(),
                source_format: SourceFormat::MeshlensJson,
                ..Default::default()
            })
        });
        PendingLog {
            side: config.side,
            source,
            record,
            status: None,
            info: RequestInfo::default(),
            started,
            trace,
            telemetry: config.telemetry.clone(),
        }
    }

    fn finish(mut self, bytes_sent: u64) {
        let info = std::mem::take(&mut self.info);
        let duration = self.started.elapsed();
        let duration_ms = millis(duration);
        let mut flags = info.flags;
        flags.sort_by_key(|f| FLAG_ORDER.iter().position(|o| o == f));
        flags.dedup();
        let (source_workload, source_namespace, source_principal) = self.source.names();
        let mtls = match (self.side, info.upstream_mtls) {
            // The server side knows whether its client authenticated; a client side, whether its upstream did.
            (Side::Inbound, _) if source_principal.is_some() => Mtls::Mutual,
            (Side::Inbound, _) => Mtls::Plaintext,
            (_, Some(true)) => Mtls::Mutual,
            (_, Some(false)) => Mtls::Plaintext,
            (_, None) => Mtls::Unknown,
        };
        self.telemetry.observe(&Sample {
            reporter: self.side.reporter(),
            source_workload,
            source_namespace,
            source_principal,
            destination_workload: info.destination_workload.as_deref(),
            destination_namespace: info.destination_namespace.as_deref(),
            destination_principal: info.destination_principal.as_deref(),
            destination_service: info.destination_service.as_deref(),
            status: self.status,
            response_flags: &flags,
            mtls,
            duration_ms,
        });
        let Some(mut r) = self.record else { return };
        r.reporter = self.side.reporter();
        r.direction = if self.side == Side::Inbound { Direction::Inbound } else { Direction::Outbound };
        r.source_workload = source_workload.map(str::to_owned);
        r.source_namespace = source_namespace.map(str::to_owned);
        r.source_principal = source_principal.map(str::to_owned);
        r.mtls = mtls;
        r.status = self.status;
        // The value of the `x-envoy-upstream-service-time` header `forward` set on the response.
        r.upstream_service_time_ms = info.upstream_time.map(millis);
        r.duration_ms = Some(duration_ms);
        r.bytes_sent = Some(bytes_sent);
        r.bytes_received = Some(info.bytes_received);
        r.response_flags = flags.iter().map(|f| (*f).to_owned()).collect();
        r.response_code_details = info.details.or_else(|| r.status.map(|_| "via_upstream".to_owned()));
        let owned = |value: Option<Arc<str>>| value.map(|v| v.to_string());
        r.route_name = owned(info.route_name);
        r.upstream_cluster = owned(info.cluster);
        r.upstream_host = owned(info.upstream_host);
        r.attempts = (info.attempts > 0).then_some(info.attempts);
        r.destination_service = owned(info.destination_service);
        r.destination_port = info.destination_port;
        r.destination_subset = owned(info.destination_subset);
        r.destination_namespace = owned(info.destination_namespace);
        r.destination_workload = owned(info.destination_workload);
        r.destination_principal = owned(info.destination_principal);
        self.telemetry.send(LogEntry {
            record: *r,
            transport_failure: info.transport_failure,
            upstream_local_address: info.upstream_local.map(|l| l.to_string()),
            trace: Some(self.trace),
            duration,
        });
    }
}

/// Counts response bytes and emits the access-log record when the body ends or is dropped (client gone).
struct LoggedBody {
    inner: ProxyBody,
    bytes: u64,
    pending: Option<PendingLog>,
}

impl hyper::body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = self.pending.take() {
                    pending.finish(self.bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish(self.bytes);
        }
    }
}

/// The response a stage's error gets, as Envoy answers it, with the flag and details it logs.
fn local_reply(info: &mut RequestInfo, error: &ProxyError) -> Response<ProxyBody> {
    let reply = error.local_reply();
    info.flags.extend(reply.flag);
    info.details = Some(reply.details.clone());
    if reply.transport_failure.is_some() {
        info.transport_failure.clone_from(&reply.transport_failure);
    }
    let mut response = full(reply.status, reply.body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Reads the body (up to `max`), so that retries and mirrors can replay it.
async fn buffer_body<B>(request: Request<B>, max: usize, info: &mut RequestInfo) -> Result<Request<Bytes>, ProxyError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() || err.is::<BodyTooLarge>() => {
            return Err(ProxyError::PayloadTooLarge(max));
        }
        Err(err) => return Err(ProxyError::Downstream(err.to_string())),
    };
    info.bytes_received = bytes.len() as u64;
    Ok(Request::from_parts(parts, bytes))
}

// ---------------------------------------------------------------------------------------------------------
// Inner stages (buffered requests)

/// Authority (from the absolute URI or `Host`), split into lowercase host and port; borrowed from the
/// request unless it had to be lowercased.
fn authority(request: &Request<Bytes>) -> (Cow<'_, str>, Option<u16>) {
    let raw = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    let raw = rsplit_ascii(raw, b'@').map_or(raw, |(_, h)| h);
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').unwrap_or((rest, ""));
        (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()))
    } else {
        match rsplit_ascii(raw, b':').map(|(host, port)| (host, port.parse::<u16>())) {
            Some((host, Ok(port))) => (host, Some(port)),
            _ => (raw, None),
        }
    };
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    (host, port)
}

/// The workload's AuthorizationPolicies, on the inbound side.
fn authorize(ctx: &Ctx, request: &Request<Bytes>) -> Result<(), ProxyError> {
    if let View::Sidecar(view) = &ctx.snapshot.view {
        let (host, _) = authority(request);
        let attributes = RequestAttributes {
            principal: ctx.conn.peer.as_ref(),
            remote_ip: Some(ctx.conn.remote.ip()),
            host: &host,
            port: ctx.conn.port,
            method: request.method(),
            path: request.uri().path(),
            headers: request.headers(),
        };
        view.authz.check(&attributes).map_err(ProxyError::RbacDenied)?;
    }
    Ok(())
}

/// `(workload, namespace)` from a peer metadata id.
fn parse_peer_id(id: &str) -> Option<(&str, &str)> {
    let mut parts = id.split('~');
    let (_kind, _ip, pod) = (parts.next()?, parts.next()?, parts.next()?);
    pod.split_once('.')
}

impl Stack {
    /// The route the request takes, and the port it was addressed to.
    fn find(&self, ctx: &Ctx, request: &Request<Bytes>) -> Result<(Matched, Option<u16>), ProxyError> {
        // A gateway's routes match no source labels.
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        let snapshot = &ctx.snapshot;
        let conn = &ctx.conn;
        let (host, port) = authority(request);
        let (table, host, port, gateways, labels) = match (&snapshot.view, self.config.side) {
            (View::Gateway(ports), _) => {
                let listener = conn.port;
                let gw = ports.get(&listener).ok_or(ProxyError::NoRoute)?;
                (&gw.table, host, Some(listener), gw.gateways.as_slice(), &NO_LABELS)
            }
            (View::Sidecar(view), Side::Inbound) => {
                let listener = conn.port;
                let (table, _, _) = view.inbound.get(&listener).ok_or(ProxyError::NoRoute)?;
                (table, host, Some(listener), &[][..], &view.me.labels)
            }
            (View::Sidecar(view), _) => {
                let fqdn = view.service_fqdn(&host);
                // A plain-HTTP proxy request without a port means port 80.
                (&view.outbound, fqdn, Some(port.unwrap_or(80)), &[][..], &view.me.labels)
            }
        };
        let view = RequestView {
            method: request.method(),
            host: &host,
            port,
            path: request.uri().path(),
            query: request.uri().query(),
            scheme: request.uri().scheme_str().unwrap_or(if conn.tls { "https" } else { "http" }),
            headers: request.headers(),
            gateways,
            source_labels: labels,
            source_namespace: self.config.me.namespace.as_deref(),
        };
        table.find(&view).map(|m| (m, port)).ok_or(ProxyError::NoRoute)
    }
}

/// A response the route itself makes (redirect, directResponse), logged as Envoy does.
fn direct_response(info: &mut RequestInfo, response: Response<ProxyBody>) -> Response<ProxyBody> {
    info.details = Some("direct_response".into());
    response
}

fn redirect_response(request: &Request<Bytes>, redirect: &crate::route::Redirect) -> Response<ProxyBody> {
    let (host, port) = authority(request);
    let scheme = redirect.scheme.clone().unwrap_or_else(|| request.uri().scheme_str().unwrap_or("http").to_owned());
    let host = redirect.authority.clone().unwrap_or_else(|| host.into_owned());
    let port = redirect.port.or(if redirect.scheme.is_some() { None } else { port });
    let path = redirect
        .uri
        .clone()
        .unwrap_or_else(|| request.uri().path_and_query().map_or("/".to_owned(), |p| p.to_string()));
    let location = match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    };
    let mut response = full(redirect.status, Bytes::new());
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

impl Stack {
    /// Routes the request, applies the route's rewrites and header edits, and hands it to the cluster the
    /// route picked.
    async fn route(
        &self,
        ctx: &Ctx,
        info: &mut RequestInfo,
        request: &mut Request<Bytes>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (matched, port) = self.find(ctx, request)?;
        let route = &matched.route;
        info.route_name.clone_from(&route.name);
        let targets = match &route.action {
            Action::Forward(targets) => targets,
            Action::Redirect(redirect) => return Ok(direct_response(info, redirect_response(request, redirect))),
            Action::Direct { status, body } => return Ok(direct_response(info, full(*status, body.clone()))),
        };
        let picked = Route::pick(targets).ok_or(ProxyError::NoRoute)?;
        let cluster = ctx.snapshot.cluster_for(&picked.target, port)?;
        info.cluster = Some(cluster.spec.name.clone());
        match &cluster.spec.host {
            Some(host) => {
                info.destination_service = Some(host.clone());
                info.destination_port = Some(cluster.spec.port);
                info.destination_subset.clone_from(&cluster.spec.subset);
            }
            None => {
                // Inbound: this workload is the destination; the client's SNI names the service.
                let sni = ctx.conn.istio_sni.as_ref();
                if let View::Sidecar(view) = &ctx.snapshot.view {
                    let me = &self.config.me;
                    let service = view.inbound.get(&cluster.spec.port).and_then(|(_, _, s)| s.as_deref());
                    info.destination_service = sni.as_ref().map(|s| s.host.as_str()).or(service).map(Arc::from);
                    info.destination_port = sni.as_ref().map(|s| s.port).or(Some(cluster.spec.port));
                    info.destination_subset = sni.and_then(|s| s.subset.as_deref()).map(Arc::from);
                    info.destination_workload = me.workload.as_deref().map(Arc::from);
                    info.destination_namespace = me.namespace.as_deref().map(Arc::from);
                    info.destination_principal.clone_from(&me.principal);
                }
            }
        }
        // Rewrites and header edits, as Envoy applies them before the upstream sees the request.
        if let Some(rewrite) = &route.rewrite {
            let path = request.uri().path().to_owned();
            if let Some(new_path) = rewrite.path(&path, request.uri().query(), matched.rewrite_scope()) {
                if let Ok(original) = HeaderValue::try_from(path) {
                    request.headers_mut().insert(X_ENVOY_ORIGINAL_PATH, original);
                }
                set_path(request, &new_path);
            }
            if let Some(authority) = rewrite.authority.as_deref().and_then(|a| HeaderValue::try_from(a).ok()) {
                request.headers_mut().insert(header::HOST, authority);
            }
        }
        route.request_headers.apply(request.headers_mut());
        picked.request_headers.apply(request.headers_mut());
        let routed = Routed { route: Arc::clone(route), cluster };
        let mut response = self.fault(ctx, info, &routed, request).await?;
        for ops in [&picked.response_headers, &route.response_headers] {
            ops.apply(response.headers_mut());
        }
        Ok(response)
    }
}

/// Replaces the path (and query) of a request, keeping the authority in `Host`.
fn set_path(request: &mut Request<Bytes>, path_and_query: &str) {
    if let Ok(uri) = http::Uri::builder().path_and_query(path_and_query).build() {
        if let Some(authority) = request.uri().authority().and_then(|a| HeaderValue::try_from(a.as_str()).ok()) {
            request.headers_mut().entry(header::HOST).or_insert(authority);
        }
        *request.uri_mut() = uri;
    }
}

fn roll(percent: f64) -> bool {
    fastrand::f64() * 100.0 < percent
}

impl Stack {
    /// The route's fault injection: a delay, then perhaps an abort.
    async fn fault(
        &self,
        ctx: &Ctx,
        info: &mut RequestInfo,
        routed: &Routed,
        request: &mut Request<Bytes>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if let Some(fault) = &routed.route.fault {
            if let Some((delay, percent)) = fault.delay
                && roll(percent)
            {
                info.flags.push("DI");
                tokio::time::sleep(delay).await;
            }
            if let Some((status, percent)) = fault.abort
                && roll(percent)
            {
                return Err(ProxyError::FaultAbort(status));
            }
        }
        if !routed.route.mirrors.is_empty() {
            self.mirror(ctx, routed, request);
        }
        match routed.route.timeout {
            Some(timeout) => tokio::time::timeout(timeout, self.retry(ctx, info, routed, request))
                .await
                .map_err(|_| ProxyError::Timeout)?,
            None => self.retry(ctx, info, routed, request).await,
        }
    }

    /// Sends copies to the route's mirrors, fire-and-forget: a copy never delays the request, and without
    /// a free slot it is dropped rather than queued.
    fn mirror(&self, ctx: &Ctx, routed: &Routed, request: &Request<Bytes>) {
        let (host, port) = authority(request);
        for mirror in routed.route.mirrors.iter().filter(|m| roll(m.percent)) {
            let (Ok(cluster), Ok(slot)) =
                (ctx.snapshot.cluster_for(&mirror.target, port), self.config.mirror_slots.clone().try_acquire_owned())
            else {
                continue;
            };
            let mut copy = clone_request(request);
            if let Ok(traceparent) = ctx.trace.traceparent(ctx.trace.span_id) {
                copy.headers_mut().insert(TRACEPARENT, traceparent);
            }
            // Envoy marks shadow traffic by suffixing the authority.
            let shadow = match port {
                Some(port) => format!("{host}-shadow:{port}"),
                None => format!("{host}-shadow"),
            };
            if let Ok(value) = HeaderValue::try_from(shadow) {
                copy.headers_mut().insert(header::HOST, value);
            }
            tokio::spawn(async move {
                let _slot = slot;
                let sent = async {
                    let picked = cluster.pick(&[])?;
                    let admission = cluster.admit(&picked).await?;
                    let (response, _) = cluster.send(&picked, admission, &copy).await?;
                    // Drain so the pooled connection can be reused; the answer itself is ignored.
                    let _ = response.into_body().collect().await;
                    Ok::<(), ProxyError>(())
                };
                if let Err(err) = sent.await {
                    tracing::debug!(%err, "mirror request failed");
                }
            });
        }
    }
}

fn clone_request(request: &Request<Bytes>) -> Request<Bytes> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

/// Envoy's default retry back-off: jittered exponential from 25 ms, capped at 250 ms.
fn backoff(retry: u32) -> Duration {
    let ceiling = (25u64 << retry.min(4)).min(250);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

impl Stack {
    /// The route's retry policy: attempts go to endpoints not tried yet where there are others.
    async fn retry(
        &self,
        ctx: &Ctx,
        info: &mut RequestInfo,
        routed: &Routed,
        request: &mut Request<Bytes>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let policy = &routed.route.retry;
        prepare_upstream_request(request, &ctx.conn, self.config.side, &self.config.me);
        // Endpoints already tried (Envoy's previous-hosts retry predicate).
        let mut previous: Vec<Arc<str>> = Vec::new();
        let mut attempt = 0u32;
        let mut _retry_permit = None;
        loop {
            attempt += 1;
            let last = attempt > policy.retries;
            // Attempts send the request by reference: what differs between them is set in place.
            if attempt > 1 {
                request.headers_mut().insert(X_ENVOY_ATTEMPT_COUNT, count_value(u64::from(attempt)));
            }
            let call = self.forward(ctx, info, &routed.cluster, &previous, request);
            let result = match policy.per_try_timeout {
                Some(timeout) => tokio::time::timeout(timeout, call).await.unwrap_or(Err(ProxyError::Timeout)),
                None => call.await,
            };
            info.attempts = attempt;
            let retriable = match &result {
                Ok(response) => {
                    let grpc =
                        response.headers().get(GRPC_STATUS).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                    policy.on.retry_status(response.status(), grpc)
                }
                Err(error) => policy.on.retry_error(error),
            };
            if !retriable {
                return result;
            }
            if last {
                if policy.retries > 0 {
                    info.flags.push("URX");
                }
                return result;
            }
            // maxRetries bounds concurrent retries per cluster; without a slot the last result stands.
            match routed.cluster.retry_permit() {
                Some(permit) => _retry_permit = Some(permit),
                None => return result,
            }
            previous.extend(info.upstream_host.clone());
            if let Ok(response) = result {
                // Drain the discarded response so its connection returns to the pool.
                let _ = response.into_body().collect().await;
            }
            tokio::time::sleep(backoff(attempt - 1)).await;
        }
    }
}

/// Hop-by-hop headers a proxy must not forward (RFC 9110 section 7.6.1), as text: every request's names
/// are checked against them, and comparing a name's text (its length first) costs less than comparing
/// `HeaderName`s.
const HOP_BY_HOP: [&str; 6] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "proxy-authorization"];

/// The client span of one upstream attempt, exported when the response body ends, fails or is dropped
/// (an attempt abandoned by a timeout ends as cancelled).
struct ClientSpan {
    telemetry: Arc<Telemetry>,
    data: Option<SpanData>,
}

impl ClientSpan {
    fn end(&mut self, status: Option<StatusCode>, error: Option<String>) {
        let Some(mut data) = self.data.take() else { return };
        data.end = SystemTime::now();
        let mut attributes = Attributes(std::mem::take(&mut data.attributes));
        attributes.int("http.response.status_code", status.map(|s| i64::from(s.as_u16())));
        data.attributes = attributes.0;
        // Client spans are errors from 400 on (OpenTelemetry's HTTP conventions).
        data.error = error.or_else(|| status.filter(|s| s.as_u16() >= 400).map(|s| s.to_string()));
        if let Some(otlp) = self.telemetry.otlp() {
            otlp.emit_span(data);
        }
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        if self.data.is_some() {
            self.end(None, Some("attempt cancelled (timeout or downstream gone)".into()));
        }
    }
}

/// A response body that ends its attempt's client span.
struct SpanBody {
    inner: ProxyBody,
    status: StatusCode,
    span: ClientSpan,
}

impl hyper::body::Body for SpanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                let status = self.status;
                self.span.end(Some(status), None);
            }
            Poll::Ready(Some(Err(err))) => {
                let (status, error) = (self.status, format!("response body failed: {err}"));
                self.span.end(Some(status), Some(error));
            }
            // Hyper stops polling a body that says it has ended, so the last frame may be all it sees.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                let status = self.status;
                self.span.end(Some(status), None);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for SpanBody {
    fn drop(&mut self) {
        // A body dropped after its end is a completed attempt, not a cancelled one.
        if hyper::body::Body::is_end_stream(&self.inner) {
            let status = self.status;
            self.span.end(Some(status), None);
        }
    }
}

impl Stack {
    /// Starts the client span of this attempt when the trace is sampled and spans are exported.
    fn client_span(
        &self,
        request: &Request<Bytes>,
        trace: &TraceContext,
        span_id: u64,
        cluster: &Cluster,
        picked: &Picked,
        info: &RequestInfo,
    ) -> Option<ClientSpan> {
        let telemetry = &self.config.telemetry;
        telemetry.otlp()?;
        let me = &self.config.me;
        let (route, service, port, principal) =
            (&info.route_name, &info.destination_service, info.destination_port, &info.destination_principal);
        let mtls = picked.spec.tls && !matches!(cluster.spec.tls, crate::cluster::UpstreamTls::Disabled);
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = format!("http://{}{path}", host.unwrap_or(&picked.spec.authority));
        let resend = request
            .headers()
            .get(X_ENVOY_ATTEMPT_COUNT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .map(|attempt| attempt - 1);
        let mut a = Attributes::default();
        a.str("http.request.method", Some(request.method().as_str()))
            .str("url.full", Some(&url))
            .str("http.route", route.as_deref())
            .str("server.address", service.as_deref().or(host.map(crate::otlp::host_of)))
            .int("server.port", port.map(i64::from))
            .str("upstream_cluster", Some(&cluster.spec.name))
            .str("upstream_address", Some(&picked.spec.authority))
            .str("guid:x-request-id", request.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()))
            .int("http.request.resend_count", resend)
            .bool("connection.mtls", Some(mtls))
            .str("source.principal", me.principal.as_deref().filter(|_| mtls))
            .str("source.workload.name", me.workload.as_deref())
            .str("source.workload.namespace", me.namespace.as_deref())
            .str("destination.principal", principal.as_deref().filter(|_| mtls))
            .str("destination.workload.name", picked.spec.workload.as_deref())
            .str("destination.workload.namespace", picked.spec.namespace.as_deref())
            .str("destination.service.host", service.as_deref());
        let name = span_name(service.as_deref(), port, host);
        let now = SystemTime::now();
        let data = SpanData {
            trace_id: trace.trace_id,
            span_id,
            parent_span_id: Some(trace.span_id),
            name,
            start: now,
            end: now,
            attributes: a.0,
            error: None,
        };
        Some(ClientSpan { telemetry: telemetry.clone(), data: Some(data) })
    }
}

impl Stack {
    /// One attempt: picks an endpoint of the cluster (one not in `previous` where it can), waits for the
    /// cluster's admission (connection and request limits), and sends the request over a pooled connection.
    async fn forward(
        &self,
        ctx: &Ctx,
        info: &mut RequestInfo,
        cluster: &Arc<Cluster>,
        previous: &[Arc<str>],
        request: &mut Request<Bytes>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let picked = cluster.pick(previous)?;
        info.upstream_host = Some(picked.spec.authority.clone());
        if cluster.spec.host.is_some() {
            info.destination_workload.clone_from(&picked.spec.workload);
            info.destination_namespace.clone_from(&picked.spec.namespace);
            let mtls = picked.spec.tls && !matches!(cluster.spec.tls, crate::cluster::UpstreamTls::Disabled);
            // Only a verified peer certificate tells who the destination is.
            info.destination_principal = picked.spec.principal.clone().filter(|_| mtls);
            info.upstream_mtls = Some(mtls);
        }
        let admission = cluster.admit(&picked).await?;
        // Each attempt is a client span, the parent of what the upstream does.
        let trace = ctx.trace;
        let span_id = new_span_id();
        if let Ok(value) = trace.traceparent(span_id) {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let mut span =
            if trace.sampled { self.client_span(request, &trace, span_id, cluster, &picked, info) } else { None };
        let started = Instant::now();
        let result = cluster.send(&picked, admission, request).await;
        let elapsed = started.elapsed();
        let (mut response, local) = match result {
            Ok(answer) => answer,
            Err(error) => {
                if let Some(span) = &mut span {
                    span.end(None, Some(error.to_string()));
                }
                return Err(error);
            }
        };
        info.upstream_time = Some(elapsed);
        info.upstream_local = Some(local);
        response.headers_mut().insert(X_ENVOY_UPSTREAM_SERVICE_TIME, count_value(millis(elapsed)));
        if let Some(span) = span {
            let status = response.status();
            response = response.map(|inner| SpanBody { inner, status, span }.boxed_unsync());
        }
        Ok(response)
    }
}

/// Headers the upstream should (not) see.
fn prepare_upstream_request(request: &mut Request<Bytes>, conn: &ConnInfo, side: Side, me: &SelfInfo) {
    // Absolute-form (HTTP proxy) requests carry the authority in the URI; the upstream gets it as Host.
    if let Some(authority) = request.uri().authority().and_then(|a| HeaderValue::try_from(a.as_str()).ok()) {
        request.headers_mut().entry(header::HOST).or_insert(authority);
    }
    let headers = request.headers_mut();
    // One pass over the names finds whether there is anything to remove (rarely): a lookup per
    // hop-by-hop name costs more than the pass, on every request.
    if headers.keys().any(|name| name == header::TE || HOP_BY_HOP.contains(&name.as_str())) {
        // Listed `Connection` options are hop-by-hop too.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
            .filter_map(|name| HeaderName::try_from(name).ok())
            .collect();
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        for name in &listed {
            headers.remove(name);
        }
        // `TE: trailers` is the one `TE` a proxy passes on (RFC 9110 section 10.1.4).
        if headers.get(header::TE).is_some_and(|te| te != "trailers") {
            headers.remove(header::TE);
        }
    }
    let connection_header = conn.upstream_header.get_or_init(|| connection_header(conn, side, me));
    match side {
        Side::Gateway => {
            if let Some(ip) = connection_header {
                match headers.entry(X_FORWARDED_FOR) {
                    header::Entry::Occupied(mut existing) => {
                        // Appended to the client's list; a list that is not text is replaced.
                        let value = match existing.get().to_str() {
                            Ok(list) => {
                                HeaderValue::try_from(format!("{list}, {}", ip.to_str().unwrap_or_default())).ok()
                            }
                            Err(_) => Some(ip.clone()),
                        };
                        if let Some(value) = value {
                            existing.insert(value);
                        }
                    }
                    header::Entry::Vacant(slot) => {
                        slot.insert(ip.clone());
                    }
                }
            }
            let proto = if conn.tls { "https" } else { "http" };
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        Side::Outbound => {
            if let Some(id) = connection_header {
                headers.insert(PEER_METADATA_ID, id.clone());
            }
        }
        Side::Inbound => {
            headers.remove(PEER_METADATA_ID);
            // Istio's sidecar tells the application who called (SANITIZE_SET).
            headers.remove(X_FORWARDED_CLIENT_CERT);
            if let Some(xfcc) = connection_header {
                headers.insert(X_FORWARDED_CLIENT_CERT, xfcc.clone());
            }
        }
    }
}

/// The header value `side` adds to every request of the connection: the client's IP for
/// `x-forwarded-for` at a gateway, the peer metadata id outbound, `x-forwarded-client-cert` inbound.
fn connection_header(conn: &ConnInfo, side: Side, me: &SelfInfo) -> Option<HeaderValue> {
    let value = match side {
        Side::Gateway => conn.remote.ip().to_string(),
        Side::Outbound => {
            let (workload, namespace) = (me.workload.as_ref()?, me.namespace.as_ref()?);
            format!("sidecar~{}~{workload}.{namespace}~{namespace}.svc.cluster.local", conn.local.ip())
        }
        Side::Inbound => format!("By={};URI={}", me.principal.as_ref()?, conn.peer.as_ref()?),
    };
    HeaderValue::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = uuid_v4().unwrap();
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        assert_ne!(uuid_v4().unwrap(), id);
    }

    #[test]
    fn peer_ids_name_workload_and_namespace() {
        assert_eq!(
            parse_peer_id("sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local"),
            Some(("productpage-v1", "default"))
        );
        assert_eq!(parse_peer_id("nonsense"), None);
    }

    #[test]
    fn backoff_is_capped() {
        assert!((0..100).all(|n| backoff(n) <= Duration::from_millis(250)));
    }
}
