//! OTLP export: spans (a server span per request a listener receives, a client span per upstream attempt)
//! and one OTLP log record per access-log record, the way Envoy's OpenTelemetry access logger (Istio's
//! `envoyOtelAls`) ships them: the access-log line as the body, the request's facts as attributes.
//!
//! The request path only hands finished items to a bounded queue ([`Exporter::emit_request`],
//! [`Exporter::emit_span`]); a full queue drops the item and counts it, so telemetry never waits for the
//! collector. A background task turns queued items into protobuf and posts them in batches over OTLP/HTTP
//! (`POST {endpoint}/v1/traces` and `/v1/logs`, `application/x-protobuf`). A failed batch is counted and
//! dropped, not retried: a proxy that retried would buffer without bound or block.
//!
//! Attribute keys are the ones the meshlens collector lifts into its span columns (`http.request.method`,
//! `http.response.status_code`, `url.full`/`url.path`, `http.route`, `server.address`, `upstream_cluster`,
//! `guid:x-request-id`, resource `service.name`/`service.namespace`); mTLS and identities use Istio's
//! attribute vocabulary (`connection.mtls`, `source.principal`, `destination.workload.name`, ...) and stay in
//! the span's attribute map.

use crate::telemetry::{AccessLogFormat, LogEntry, format_line};
use bytes::Bytes;
use http::header::{HeaderValue, InvalidHeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meshlens_model::{Mtls, RequestRecord};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind};
use prost::Message;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// W3C trace context of one hop: the trace, this hop's server span, and the span it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The server span of this hop.
    pub span_id: u64,
    /// The caller's span (the `parent-id` of the incoming `traceparent`), absent for a new trace.
    pub parent_span_id: Option<u64>,
    pub sampled: bool,
}

impl TraceContext {
    /// The `traceparent` header to send upstream from the span `span_id` (a client span of this hop).
    pub fn traceparent(&self, span_id: u64) -> Result<HeaderValue, InvalidHeaderValue> {
        // Written into a template of its exact length and copied once, into the header value: this runs
        // for every request, where `format!`'s machinery and a `String` in between cost more than the rest
        // of the stage.
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&mut out[3..19], (self.trace_id >> 64) as u64);
        write_hex(&mut out[19..35], self.trace_id as u64);
        write_hex(&mut out[36..52], span_id);
        if self.sampled {
            out[54] = b'1';
        }
        HeaderValue::from_bytes(&out)
    }

    /// `(trace id, parent span id, sampled)` from a `traceparent` header: `VERSION-TRACE-PARENT-FLAGS` with
    /// lowercase hex, non-zero ids and a version other than `ff` (W3C Trace Context, level 1).
    pub fn parse_traceparent(value: &str) -> Option<(u128, u64, bool)> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !(hex(version, 2) && version != "ff" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)) {
            return None;
        }
        let trace = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
        let parent = u64::from_str_radix(parent, 16).ok().filter(|&p| p != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some((trace, parent, flags & 1 == 1))
    }
}

/// A random non-zero span id.
pub fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// A random non-zero trace id.
pub fn new_trace_id() -> u128 {
    fastrand::u128(1..)
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// `http://HOST:PORT[/PREFIX]`; `/v1/traces` and `/v1/logs` are appended, as the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` convention has it.
    pub endpoint: String,
    /// Fraction of new traces sampled; a request that carries a `traceparent` follows its sampled flag.
    pub sampling: f64,
    /// Encoding of the log records' bodies.
    pub log_format: AccessLogFormat,
    /// Items waiting for the exporter before new ones are dropped.
    pub queue: usize,
    /// Items per export request.
    pub max_batch: usize,
    /// How long an item may wait for its batch to fill.
    pub batch_delay: Duration,
    /// Bound on one export request.
    pub timeout: Duration,
}

impl OtlpOptions {
    pub fn new(endpoint: impl Into<String>) -> OtlpOptions {
        OtlpOptions {
            endpoint: endpoint.into(),
            sampling: 1.0,
            log_format: AccessLogFormat::Json,
            queue: 8192,
            max_batch: 512,
            batch_delay: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Who is reporting: becomes the OTLP resource of every span and log record.
#[derive(Debug, Clone, Default)]
pub struct ProxyResource {
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub address: Option<String>,
    pub gateway: bool,
}

impl ProxyResource {
    fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = vec![string("telemetry.sdk.name", "meshlens-proxy")];
        if let Some(workload) = &self.workload {
            attributes.push(string("service.name", workload));
        }
        if let Some(namespace) = &self.namespace {
            attributes.push(string("service.namespace", namespace));
        }
        // Envoy's OpenTelemetry access logger names the proxy by its node id; the collector attributes
        // records (and tells gateways from sidecars) by it.
        if let (Some(workload), Some(namespace)) = (&self.workload, &self.namespace) {
            let kind = if self.gateway { "router" } else { "sidecar" };
            let ip = self.address.as_deref().unwrap_or("0.0.0.0");
            attributes.push(string(
                "node_name",
                &format!("{kind}~{ip}~{workload}.{namespace}~{namespace}.svc.cluster.local"),
            ));
        }
        attributes
    }
}

/// A finished client span, built on the request path only for sampled requests.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set when the span failed: its status becomes ERROR with this message.
    pub error: Option<String>,
}

enum Item {
    /// An access-log record: a log record, and the server span when its trace is sampled.
    Request(Arc<LogEntry>),
    Span(Box<SpanData>),
}

/// Export counters, per signal.
#[derive(Debug, Default)]
pub struct Counters {
    pub spans_dropped: AtomicU64,
    pub logs_dropped: AtomicU64,
    pub spans_exported: AtomicU64,
    pub logs_exported: AtomicU64,
    pub spans_failed: AtomicU64,
    pub logs_failed: AtomicU64,
}

/// The handle the request path uses; the batches are sent by a background task.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<Item>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    sampling: f64,
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Item::Request(_) => "Item::Request",
            Item::Span(_) => "Item::Span",
        })
    }
}

/// The endpoint is not an `http://` URL.
#[derive(Debug, thiserror::Error)]
#[error("OTLP endpoint {endpoint:?}: {reason}")]
pub struct EndpointError {
    endpoint: String,
    reason: String,
}

/// `(traces URL, logs URL)` from the base endpoint.
fn export_uris(endpoint: &str) -> Result<(http::Uri, http::Uri), EndpointError> {
    let error = |reason: &str| EndpointError { endpoint: endpoint.to_owned(), reason: reason.to_owned() };
    let uri: http::Uri = endpoint.parse().map_err(|e: http::uri::InvalidUri| error(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(error("https is not supported; use http:// (OTLP/HTTP protobuf, e.g. http://127.0.0.1:4318)"));
        }
        _ => return Err(error("expected http://HOST:PORT, e.g. http://127.0.0.1:4318")),
    }
    let Some(authority) = uri.authority() else { return Err(error("expected http://HOST:PORT")) };
    if uri.query().is_some() {
        return Err(error("a query string is not allowed"));
    }
    let prefix = uri.path().trim_end_matches('/');
    let signal = |name: &str| -> Result<http::Uri, EndpointError> {
        format!("http://{authority}{prefix}/v1/{name}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| error(&e.to_string()))
    };
    Ok((signal("traces")?, signal("logs")?))
}

impl Exporter {
    /// Checks the options and starts the export task on the current runtime.
    pub fn start(options: OtlpOptions, resource: &ProxyResource) -> Result<Exporter, EndpointError> {
        let (traces_uri, logs_uri) = export_uris(&options.endpoint)?;
        if !(0.0..=1.0).contains(&options.sampling) {
            return Err(EndpointError {
                endpoint: options.endpoint,
                reason: format!("sampling ratio {} is not between 0 and 1", options.sampling),
            });
        }
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (flush, flush_rx) = mpsc::channel(1);
        let counters = Arc::new(Counters::default());
        let task = Task {
            client: Client::builder(TokioExecutor::new()).build_http(),
            traces_uri,
            logs_uri,
            resource: Resource { attributes: resource.attributes(), ..Default::default() },
            scope: InstrumentationScope {
                name: "meshlens-proxy".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
            options: options.clone(),
            counters: counters.clone(),
            failing: false,
        };
        tokio::spawn(task.run(rx, flush_rx));
        Ok(Exporter { tx, flush, sampling: options.sampling, counters })
    }

    /// Whether a new trace (no sampled parent) is sampled.
    pub fn sample_root(&self) -> bool {
        self.sampling >= 1.0 || fastrand::f64() < self.sampling
    }

    /// Queues an access-log record (and its server span), or drops and counts it.
    pub fn emit_request(&self, entry: Arc<LogEntry>) {
        let sampled = entry.trace.is_some_and(|t| t.sampled);
        if self.tx.try_send(Item::Request(entry)).is_err() {
            self.counters.logs_dropped.fetch_add(1, Ordering::Relaxed);
            if sampled {
                self.counters.spans_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a finished client span, or drops and counts it.
    pub fn emit_span(&self, span: SpanData) {
        if self.tx.try_send(Item::Span(Box::new(span))).is_err() {
            self.counters.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Exports everything queued so far; returns when it is sent or `timeout` has passed.
    pub async fn flush(&self, timeout: Duration) {
        let (ack, done) = oneshot::channel();
        let flushed = async {
            if self.flush.send(ack).await.is_ok() {
                let _ = done.await;
            }
        };
        if tokio::time::timeout(timeout, flushed).await.is_err() {
            tracing::warn!("OTLP export did not finish within {timeout:?} at shutdown; the rest is dropped");
        }
    }

    /// Prometheus exposition of the counters.
    pub fn render_prometheus(&self, out: &mut String) {
        let c = &self.counters;
        let series: [Series<'_>; 3] = [
            (
                "meshlens_proxy_otlp_dropped_total",
                "OTLP items dropped because the export queue was full.",
                [("traces", &c.spans_dropped), ("logs", &c.logs_dropped)],
            ),
            (
                "meshlens_proxy_otlp_exported_total",
                "OTLP items the endpoint accepted.",
                [("traces", &c.spans_exported), ("logs", &c.logs_exported)],
            ),
            (
                "meshlens_proxy_otlp_failed_total",
                "OTLP items in export requests that failed (not retried).",
                [("traces", &c.spans_failed), ("logs", &c.logs_failed)],
            ),
        ];
        for (name, help, values) in series {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (signal, value) in values {
                let _ = writeln!(out, "{name}{{signal=\"{signal}\"}} {}", value.load(Ordering::Relaxed));
            }
        }
    }
}

/// A counter family: name, help, and the value per signal.
type Series<'a> = (&'static str, &'static str, [(&'static str, &'a AtomicU64); 2]);

struct Task {
    client: Client<HttpConnector, Full<Bytes>>,
    traces_uri: http::Uri,
    logs_uri: http::Uri,
    resource: Resource,
    scope: InstrumentationScope,
    options: OtlpOptions,
    counters: Arc<Counters>,
    /// Whether the last export failed, so that a down endpoint is reported once, not per batch.
    failing: bool,
}

#[derive(Default)]
struct Batch {
    spans: Vec<Span>,
    logs: Vec<LogRecord>,
    items: usize,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Item>, mut flush_rx: mpsc::Receiver<oneshot::Sender<()>>) {
        let mut batch = Batch::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let wait = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ack = flush_rx.recv() => {
                    while let Ok(item) = rx.try_recv() {
                        self.add(&mut batch, item);
                    }
                    self.export(std::mem::take(&mut batch)).await;
                    deadline = None;
                    match ack {
                        Some(ack) => { let _ = ack.send(()); }
                        None => return,
                    }
                }
                item = rx.recv() => match item {
                    Some(item) => {
                        self.add(&mut batch, item);
                        if batch.items >= self.options.max_batch {
                            self.export(std::mem::take(&mut batch)).await;
                            deadline = None;
                        } else if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + self.options.batch_delay);
                        }
                    }
                    None => {
                        self.export(std::mem::take(&mut batch)).await;
                        return;
                    }
                },
                () = wait => {
                    self.export(std::mem::take(&mut batch)).await;
                    deadline = None;
                }
            }
        }
    }

    fn add(&self, batch: &mut Batch, item: Item) {
        batch.items += 1;
        match item {
            Item::Request(entry) => {
                if let Some(trace) = entry.trace.filter(|t| t.sampled) {
                    batch.spans.push(server_span(&entry, &trace));
                }
                batch.logs.push(log_record(&entry, self.options.log_format));
            }
            Item::Span(span) => batch.spans.push(client_span(*span)),
        }
    }

    async fn export(&mut self, batch: Batch) {
        if !batch.spans.is_empty() {
            let n = batch.spans.len() as u64;
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(self.resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(self.scope.clone()),
                        spans: batch.spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let ok = self.post(self.traces_uri.clone(), request.encode_to_vec()).await;
            let counter = if ok { &self.counters.spans_exported } else { &self.counters.spans_failed };
            counter.fetch_add(n, Ordering::Relaxed);
        }
        if !batch.logs.is_empty() {
            let n = batch.logs.len() as u64;
            let request = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(self.resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(self.scope.clone()),
                        log_records: batch.logs,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let ok = self.post(self.logs_uri.clone(), request.encode_to_vec()).await;
            let counter = if ok { &self.counters.logs_exported } else { &self.counters.logs_failed };
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// One OTLP/HTTP export request; `false` when it failed (reported once per run of failures).
    async fn post(&mut self, uri: http::Uri, body: Vec<u8>) -> bool {
        let request = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)));
        let result = match request {
            Ok(request) => match tokio::time::timeout(self.options.timeout, self.client.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    // Read the (small) answer so that the connection is reused.
                    let _ = response.into_body().collect().await;
                    Ok(())
                }
                Ok(Ok(response)) => {
                    let status = response.status();
                    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    Err(format!("answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])))
                }
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.options.timeout)),
            },
            Err(err) => Err(err.to_string()),
        };
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(%uri, "OTLP export works again");
                }
                self.failing = false;
                true
            }
            Err(reason) => {
                if !self.failing {
                    tracing::warn!(%uri, %reason, "OTLP export failed; dropping batches until it works again");
                }
                self.failing = true;
                false
            }
        }
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.to_owned()))
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn chrono_nanos(time: chrono::DateTime<chrono::Utc>) -> u64 {
    time.timestamp_nanos_opt().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// Attribute builder that skips absent values.
#[derive(Default)]
pub struct Attributes(pub Vec<KeyValue>);

impl Attributes {
    pub fn str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.0.push(string(key, value));
        }
        self
    }

    pub fn int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        if let Some(value) = value {
            self.0.push(attribute(key, Value::IntValue(value)));
        }
        self
    }

    pub fn bool(&mut self, key: &str, value: Option<bool>) -> &mut Self {
        if let Some(value) = value {
            self.0.push(attribute(key, Value::BoolValue(value)));
        }
        self
    }
}

/// The request's facts as attributes, shared by the server span and the log record so that both say the
/// same thing under the same keys.
fn request_attributes(r: &RequestRecord) -> Vec<KeyValue> {
    let (path, query) = match r.path.as_deref().map(|p| p.split_once('?').map_or((p, None), |(p, q)| (p, Some(q)))) {
        Some((path, query)) => (Some(path), query),
        None => (None, None),
    };
    let server_address = r.destination_service.as_deref().or_else(|| r.authority.as_deref().map(host_of));
    let mut a = Attributes::default();
    a.str("http.request.method", r.method.as_deref())
        .str("url.path", path)
        .str("url.query", query)
        .int("http.response.status_code", r.status.map(i64::from))
        .str("http.route", r.route_name.as_deref())
        .str("server.address", server_address)
        .int("server.port", r.destination_port.map(i64::from))
        .str("network.protocol.name", Some("http"))
        .str("network.protocol.version", r.protocol.as_deref().and_then(|p| p.strip_prefix("HTTP/")))
        .str("user_agent.original", r.user_agent.as_deref())
        .str("guid:x-request-id", r.request_id.as_deref())
        .str("upstream_cluster", r.upstream_cluster.as_deref())
        .str("upstream_address", r.upstream_host.as_deref())
        .str("downstream_remote_address", r.downstream_remote_address.as_deref())
        .str("response_flags", (!r.response_flags.is_empty()).then(|| r.response_flags.join(",")).as_deref())
        .str("response_code_details", r.response_code_details.as_deref())
        .str("istio.reporter", Some(r.reporter.as_str()))
        .bool(
            "connection.mtls",
            match r.mtls {
                Mtls::Mutual => Some(true),
                Mtls::Plaintext => Some(false),
                Mtls::Unknown => None,
            },
        )
        .str("source.principal", r.source_principal.as_deref())
        .str("source.workload.name", r.source_workload.as_deref())
        .str("source.workload.namespace", r.source_namespace.as_deref())
        .str("destination.principal", r.destination_principal.as_deref())
        .str("destination.workload.name", r.destination_workload.as_deref())
        .str("destination.workload.namespace", r.destination_namespace.as_deref())
        .str("destination.service.host", r.destination_service.as_deref())
        .int("retry.attempts", r.attempts.map(i64::from));
    a.0
}

/// `host` of `host:port` or `[v6]:port`.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    authority.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(authority, |(host, _)| host)
}

/// Span name as Envoy's tracer names a route without a decorator: `HOST:PORT/*`.
pub fn span_name(service: Option<&str>, port: Option<u16>, authority: Option<&str>) -> String {
    match (service, port) {
        (Some(service), Some(port)) => format!("{service}:{port}/*"),
        (Some(service), None) => format!("{service}/*"),
        _ => format!("{}/*", authority.unwrap_or("-")),
    }
}

fn server_span(entry: &LogEntry, trace: &TraceContext) -> Span {
    let r = &entry.record;
    let start = chrono_nanos(r.timestamp);
    let end = start.saturating_add(u64::try_from(entry.duration.as_nanos()).unwrap_or(u64::MAX));
    // A server span is an error when the server failed (5xx) or answered nothing at all.
    let error = match r.status {
        Some(status) if status < 500 => None,
        _ => Some(r.response_code_details.clone().unwrap_or_else(|| "no response".into())),
    };
    Span {
        trace_id: trace.trace_id.to_be_bytes().to_vec(),
        span_id: trace.span_id.to_be_bytes().to_vec(),
        parent_span_id: trace.parent_span_id.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        flags: 1,
        name: span_name(r.destination_service.as_deref(), r.destination_port, r.authority.as_deref()),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        attributes: request_attributes(r),
        status: Some(status(error)),
        ..Default::default()
    }
}

fn status(error: Option<String>) -> Status {
    match error {
        Some(message) => Status { code: 2, message },
        None => Status::default(),
    }
}

fn client_span(span: SpanData) -> Span {
    let start = nanos(span.start);
    Span {
        trace_id: span.trace_id.to_be_bytes().to_vec(),
        span_id: span.span_id.to_be_bytes().to_vec(),
        parent_span_id: span.parent_span_id.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        flags: 1,
        name: span.name,
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: nanos(span.end).max(start),
        attributes: span.attributes,
        status: Some(status(span.error)),
        ..Default::default()
    }
}

fn log_record(entry: &LogEntry, format: AccessLogFormat) -> LogRecord {
    let mut line = String::new();
    format_line(&mut line, entry, format);
    let trace = entry.trace;
    LogRecord {
        time_unix_nano: chrono_nanos(entry.record.timestamp),
        observed_time_unix_nano: nanos(SystemTime::now()),
        body: Some(AnyValue { value: Some(Value::StringValue(line)) }),
        attributes: request_attributes(&entry.record),
        trace_id: trace.map(|t| t.trace_id.to_be_bytes().to_vec()).unwrap_or_default(),
        span_id: trace.map(|t| t.span_id.to_be_bytes().to_vec()).unwrap_or_default(),
        flags: trace.map_or(0, |t| u32::from(t.sampled)),
        ..Default::default()
    }
}

/// Fills `out` with the low `4 × out.len()` bits of `value` as lowercase hex digits.
pub(crate) fn write_hex(out: &mut [u8], mut value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for digit in out.iter_mut().rev() {
        *digit = HEX[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn traceparent_is_validated() {
        let parsed = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(parsed, Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true)));
        let unsampled = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|p| p.2), Some(false));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert_eq!(TraceContext::parse_traceparent(bad), None, "{bad}");
        }
        let context = TraceContext { trace_id: 0xab, span_id: 1, parent_span_id: None, sampled: true };
        assert_eq!(context.traceparent(0xcd).unwrap(), "00-000000000000000000000000000000ab-00000000000000cd-01");
        let full = TraceContext { trace_id: u128::MAX - 1, span_id: 1, parent_span_id: None, sampled: false };
        assert_eq!(full.traceparent(u64::MAX).unwrap(), "00-fffffffffffffffffffffffffffffffe-ffffffffffffffff-00");
    }

    #[test]
    fn endpoints_must_be_plain_http() {
        let (traces, logs) = export_uris("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (traces.to_string(), logs.to_string()),
            ("http://127.0.0.1:4318/v1/traces".into(), "http://127.0.0.1:4318/v1/logs".into())
        );
        assert_eq!(
            export_uris("http://collector:4318/otlp/").unwrap().0.to_string(),
            "http://collector:4318/otlp/v1/traces"
        );
        for bad in ["https://collector:4318", "127.0.0.1:4318", "http://", "http://c:4318/?x=1", "not a url"] {
            assert!(export_uris(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("reviews:9080"), "reviews");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("reviews"), "reviews");
    }

    /// The exporter's task is stuck on an endpoint that accepts and never answers: the queue fills, and
    /// further items are dropped and counted at once instead of waiting.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, accepted) = oneshot::channel();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = accepted_tx.send(());
            // Read the request and never answer.
            let mut buf = vec![0; 65536];
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let options = OtlpOptions {
            queue: 4,
            max_batch: 1,
            timeout: Duration::from_secs(60),
            ..OtlpOptions::new(format!("http://{addr}"))
        };
        let exporter = Exporter::start(options, &ProxyResource::default()).unwrap();
        let entry = |sampled| {
            let trace = TraceContext { trace_id: 1, span_id: 2, parent_span_id: None, sampled };
            Arc::new(LogEntry { trace: Some(trace), ..LogEntry::default() })
        };
        // The first item is taken by the task, which then hangs exporting it.
        exporter.emit_request(entry(true));
        accepted.await.unwrap();
        for _ in 0..4 {
            exporter.emit_request(entry(false));
        }
        assert_eq!(exporter.counters.logs_dropped.load(Ordering::Relaxed), 0, "4 items fit the queue");
        for _ in 0..10 {
            exporter.emit_request(entry(true));
        }
        for _ in 0..3 {
            exporter.emit_span(SpanData {
                trace_id: 1,
                span_id: 3,
                parent_span_id: Some(2),
                name: "x".into(),
                start: SystemTime::now(),
                end: SystemTime::now(),
                attributes: Vec::new(),
                error: None,
            });
        }
        let c = &exporter.counters;
        assert_eq!(c.logs_dropped.load(Ordering::Relaxed), 10);
        assert_eq!(c.spans_dropped.load(Ordering::Relaxed), 13, "10 sampled server spans and 3 client spans");
        assert_eq!(c.logs_exported.load(Ordering::Relaxed) + c.spans_exported.load(Ordering::Relaxed), 0);
        let mut text = String::new();
        exporter.render_prometheus(&mut text);
        assert!(text.contains("meshlens_proxy_otlp_dropped_total{signal=\"logs\"} 10"), "{text}");
        server.abort();
    }
}
