//! Upstream clusters: the endpoints behind one `outbound|PORT|SUBSET|HOST`, with the DestinationRule traffic
//! policy that governs them — load balancing, connection-pool limits (circuit breaking), outlier detection
//! and TLS origination — and a pool of upstream connections per endpoint.
//!
//! The pool is a connection-level client, not a general-purpose one: a request is sent on an idle HTTP/1
//! connection of the endpoint its cluster picked ([`crate::h1`], driven by the request itself), or on the
//! endpoint's shared HTTP/2 connection (hyper's, a task of its own), and an HTTP/1 connection is idle
//! again when the response body has ended. Nothing is spawned or sent through a channel per request.
//!
//! A cluster's runtime state (pool, ejections, counters) survives a config reload when its [`ClusterSpec`]
//! is unchanged, so reloading never resets a circuit breaker or drops pooled connections needlessly.

use crate::error::ProxyError;
use crate::h1;
use crate::tls::{self, CertFiles, CertSource};
use crate::{BoxError, ProxyBody};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meshlens_model::SpiffeId;
use meshlens_model::mesh::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, SimpleLb,
    TrafficPolicy,
};
use meshlens_model::mesh::{MeshConfig, meta::labels_match};
use meshlens_model::names::IstioSni;
use rustls::pki_types::ServerName;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Istio leaves connection-pool limits effectively unlimited (2^32-1) unless a DestinationRule sets them.
const UNLIMITED: usize = u32::MAX as usize;
/// Envoy's default cap on one ejection (`max_ejection_time`).
const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Istio's (Envoy's) default idle timeout of upstream HTTP connections.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Istio's default TCP connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `now + after`, saturating far in the future for absurd durations from config.
fn later(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Locks `mutex`; its data stays consistent even if a holder panicked (every update is one assignment).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
}

/// Outlier detection settings with Istio's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSettings {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl OutlierSettings {
    fn from_istio(od: &OutlierDetection) -> OutlierSettings {
        OutlierSettings {
            // Istio: consecutive5xxErrors defaults to 5; the deprecated consecutiveErrors counts gateway errors.
            consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(if od.consecutive_errors.is_some() { 0 } else { 5 }),
            consecutive_gateway: od.consecutive_gateway_errors.or(od.consecutive_errors).unwrap_or(0),
            interval: od.interval.map_or(Duration::from_secs(10), |d| d.as_std()),
            base_ejection: od.base_ejection_time.map_or(Duration::from_secs(30), |d| d.as_std()),
            max_ejection_percent: od.max_ejection_percent.unwrap_or(10),
        }
    }
}

/// How a cluster's TLS endpoints are reached.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamTls {
    /// Plaintext to every endpoint.
    Disabled,
    /// Istio mTLS with the workload identity, expecting one of `identities`.
    IstioMutual { sni: String, identities: Vec<SpiffeId> },
    /// DestinationRule `SIMPLE` or `MUTUAL` with files.
    Simple { sni: String, ca_certificates: PathBuf, client: Option<(PathBuf, PathBuf)> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    /// `ip:port` (or `host:port`, resolved at connect time).
    pub authority: Arc<str>,
    /// Whether this endpoint is reached with the cluster's TLS (auto mTLS makes this per endpoint).
    pub tls: bool,
    pub namespace: Option<Arc<str>>,
    pub workload: Option<Arc<str>>,
    pub identity: Option<SpiffeId>,
    /// The identity as text, for access logs and metrics (formatted once, not per request).
    pub principal: Option<Arc<str>>,
}

/// Everything that defines a cluster; equal specs share runtime state across reloads.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// `outbound|9080|v1|reviews.default.svc.cluster.local` or `inbound|9080||`.
    pub name: Arc<str>,
    pub host: Option<Arc<str>>,
    pub port: u16,
    pub subset: Option<Arc<str>>,
    pub endpoints: Vec<EndpointSpec>,
    pub lb: LbPolicy,
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_requests: usize,
    pub max_retries: usize,
    pub max_requests_per_connection: Option<u32>,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub outlier: Option<OutlierSettings>,
    pub http2: bool,
    pub tls: UpstreamTls,
}

impl ClusterSpec {
    /// A cluster with one plaintext endpoint and Istio's defaults (a sidecar's inbound cluster).
    pub fn static_endpoint(name: String, port: u16, authority: String, http2: bool) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            host: None,
            port,
            subset: None,
            endpoints: vec![EndpointSpec {
                authority: authority.into(),
                tls: false,
                namespace: None,
                workload: None,
                identity: None,
                principal: None,
            }],
            lb: LbPolicy::LeastRequest,
            max_connections: UNLIMITED,
            max_pending: UNLIMITED,
            max_requests: UNLIMITED,
            max_retries: UNLIMITED,
            max_requests_per_connection: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: None,
            outlier: None,
            http2,
            tls: UpstreamTls::Disabled,
        }
    }
}

/// What the proxy building clusters is: who it is, and whether it can originate Istio mTLS.
#[derive(Debug, Clone)]
pub struct ClusterContext {
    pub client_namespace: String,
    pub trust_domain: String,
    pub has_identity: bool,
}

/// Builds the spec of `outbound|port|subset|host` from the mesh config. `None` when the host is not a
/// Service of the config.
pub fn outbound_spec(
    mesh: &MeshConfig,
    ctx: &ClusterContext,
    host: &str,
    port: u16,
    subset: Option<&str>,
) -> Option<ClusterSpec> {
    let service = mesh.service_by_host(host)?;
    let service_port = service.spec.ports.iter().find(|p| p.port == port)?;
    let rule = mesh.destination_rule_for(host, &ctx.client_namespace);
    let subset_def = subset.and_then(|s| rule?.spec.subsets.iter().find(|d| d.name == s));
    if subset.is_some() && subset_def.is_none() {
        // Istio answers 503 NC for a subset no DestinationRule defines.
        return None;
    }
    let policy = effective_policy(
        rule.and_then(|r| r.spec.traffic_policy.as_ref()),
        subset_def.and_then(|s| s.traffic_policy.as_ref()),
        port,
    );
    let endpoints: Vec<_> = mesh
        .endpoints(service, port)
        .into_iter()
        .filter(|e| subset_def.is_none_or(|s| labels_match(&s.labels, &e.workload.labels)))
        .collect();
    let tls_mode = policy.tls.as_ref().and_then(|t| t.mode);
    let endpoint_specs: Vec<EndpointSpec> = endpoints
        .iter()
        .map(|e| {
            let identity = SpiffeId::new(&ctx.trust_domain, &e.workload.namespace, &e.workload.service_account).ok();
            EndpointSpec {
                authority: if e.address.contains(':') {
                    format!("[{}]:{}", e.address, e.port).into()
                } else {
                    format!("{}:{}", e.address, e.port).into()
                },
                tls: match tls_mode {
                    Some(ClientTlsMode::Disable) => false,
                    Some(_) => true,
                    // Auto mTLS: endpoints with an Istio sidecar get ISTIO_MUTUAL.
                    None => ctx.has_identity && e.workload.has_sidecar(),
                },
                namespace: Some(e.workload.namespace.as_str().into()),
                workload: Some(e.workload.name.as_str().into()),
                principal: identity.as_ref().map(|id| Arc::from(id.to_string())),
                identity,
            }
        })
        .collect();
    let sni = IstioSni { port, subset: subset.map(str::to_owned), host: host.to_owned() }.to_string();
    let mut identities: Vec<SpiffeId> = endpoint_specs.iter().filter_map(|e| e.identity.clone()).collect();
    identities.sort();
    identities.dedup();
    let tls = upstream_tls(policy.tls.as_ref(), host, sni, identities);
    let pool = policy.connection_pool.unwrap_or_default();
    let tcp = pool.tcp.unwrap_or_default();
    let http = pool.http.unwrap_or_default();
    let limit = |v: Option<u32>| v.filter(|n| *n > 0).map_or(UNLIMITED, |n| n as usize);
    let app_protocol = service_port.app_protocol.as_deref().unwrap_or("");
    let port_name = service_port.name.as_deref().unwrap_or("");
    let http2 = ["http2", "grpc", "h2c"]
        .iter()
        .any(|p| app_protocol == *p || port_name == *p || port_name.starts_with(&format!("{p}-")))
        || http.h2_upgrade_policy.as_deref() == Some("UPGRADE");
    Some(ClusterSpec {
        name: format!("outbound|{port}|{}|{host}", subset.unwrap_or("")).into(),
        host: Some(host.into()),
        port,
        subset: subset.map(Arc::from),
        endpoints: endpoint_specs,
        lb: lb_policy(policy.load_balancer.as_ref()),
        max_connections: limit(tcp.max_connections),
        max_pending: limit(http.http1_max_pending_requests),
        max_requests: limit(http.http2_max_requests),
        max_retries: limit(http.max_retries),
        max_requests_per_connection: http.max_requests_per_connection.filter(|n| *n > 0),
        connect_timeout: tcp.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.as_std()),
        idle_timeout: http.idle_timeout.map(|d| d.as_std()),
        outlier: policy.outlier_detection.as_ref().map(OutlierSettings::from_istio),
        http2,
        tls,
    })
}

/// The traffic policy that applies to one port of one subset: port-level settings override the policy's
/// own, and a subset's policy overrides the rule's, field by field (Istio's merge).
#[derive(Debug, Default)]
struct Effective {
    load_balancer: Option<LoadBalancerSettings>,
    connection_pool: Option<ConnectionPoolSettings>,
    outlier_detection: Option<OutlierDetection>,
    tls: Option<ClientTlsSettings>,
}

fn effective_policy(rule: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u16) -> Effective {
    let mut out = Effective::default();
    for policy in [rule, subset].into_iter().flatten() {
        let port_level =
            policy.port_level_settings.iter().find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)));
        macro_rules! merge {
            ($field:ident) => {
                if let Some(v) = port_level.and_then(|p| p.$field.clone()).or_else(|| policy.$field.clone()) {
                    out.$field = Some(v);
                }
            };
        }
        merge!(load_balancer);
        merge!(connection_pool);
        merge!(outlier_detection);
        merge!(tls);
    }
    out
}

fn lb_policy(settings: Option<&LoadBalancerSettings>) -> LbPolicy {
    match settings.and_then(|s| s.simple) {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        // Istio's default (and LEAST_CONN, its deprecated alias) is LEAST_REQUEST.
        _ => LbPolicy::LeastRequest,
    }
}

fn upstream_tls(
    settings: Option<&ClientTlsSettings>,
    host: &str,
    sni: String,
    identities: Vec<SpiffeId>,
) -> UpstreamTls {
    match settings.and_then(|t| t.mode.map(|m| (m, t))) {
        Some((ClientTlsMode::Disable, _)) => UpstreamTls::Disabled,
        Some((ClientTlsMode::Simple | ClientTlsMode::Mutual, t)) => match &t.ca_certificates {
            // Non-mesh TLS verifies the server's certificate against the name it is asked for: `sni`, or
            // the destination host (Istio's auto SNI).
            Some(ca) => UpstreamTls::Simple {
                sni: t.sni.clone().unwrap_or_else(|| host.to_owned()),
                ca_certificates: PathBuf::from(ca),
                client: t.client_certificate.as_ref().zip(t.private_key.as_ref()).map(|(c, k)| (c.into(), k.into())),
            },
            // Without a CA bundle there is nothing to verify against; the proxy ships no public roots.
            None => UpstreamTls::Disabled,
        },
        Some((ClientTlsMode::IstioMutual, t)) => {
            let mut identities = identities;
            identities.extend(t.subject_alt_names.iter().filter_map(|s| s.parse().ok()));
            UpstreamTls::IstioMutual { sni, identities }
        }
        None => UpstreamTls::IstioMutual { sni, identities },
    }
}

// ---------------------------------------------------------------------------------------------------------
// Runtime

#[derive(Debug, Default)]
struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

struct EndpointState {
    spec: Arc<EndpointSpec>,
    active: AtomicUsize,
    outlier: Mutex<OutlierState>,
    pool: Mutex<Pool>,
    /// Held while an HTTP/2 connection is being opened, so that concurrent requests share it.
    connecting: tokio::sync::Mutex<()>,
}

impl EndpointState {
    /// The endpoint's shared HTTP/2 connection, unless there is none or it has closed.
    fn live_http2(&self) -> Option<(http2::SendRequest<Full<Bytes>>, Arc<str>)> {
        lock(&self.pool).shared.clone().filter(|(sender, _)| !sender.is_closed())
    }
}

/// The connections to one endpoint that wait for a request.
#[derive(Default)]
struct Pool {
    /// Idle HTTP/1 connections, the most recently used last.
    idle: Vec<Upstream>,
    /// The HTTP/2 connection every request shares, and its local address.
    shared: Option<(http2::SendRequest<Full<Bytes>>, Arc<str>)>,
}

/// An idle HTTP/1 connection to an endpoint.
struct Upstream {
    connection: Box<h1::Connection<UpstreamIo>>,
    /// Local address of the connection, for the access log.
    local: Arc<str>,
    /// Requests sent on it, for `maxRequestsPerConnection`.
    requests: u32,
    idle_since: Instant,
}

/// The endpoint a request was sent to.
#[derive(Debug, Clone)]
pub struct Picked {
    pub index: usize,
    pub spec: Arc<EndpointSpec>,
}

/// A live cluster.
pub struct Cluster {
    pub spec: ClusterSpec,
    endpoints: Vec<EndpointState>,
    rr: AtomicUsize,
    next_sweep: Mutex<Instant>,
    requests: Arc<Semaphore>,
    connections: Option<Arc<Semaphore>>,
    pending: Arc<AtomicUsize>,
    retries: Arc<Semaphore>,
    connector: Connector,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.spec.name).finish_non_exhaustive()
    }
}

/// Holds circuit-breaker capacity for the life of a request (including its response body).
pub struct Admission {
    _request: OwnedSemaphorePermit,
    _connection: Option<OwnedSemaphorePermit>,
    active: (Arc<Cluster>, usize),
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("endpoint", &self.active.1).finish_non_exhaustive()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let (cluster, index) = &self.active;
        cluster.endpoints[*index].active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry slot (`maxRetries` concurrent retries per cluster).
#[derive(Debug)]
pub struct RetryPermit {
    _permit: OwnedSemaphorePermit,
}

impl Cluster {
    pub fn new(spec: ClusterSpec, identity: Option<&Arc<CertSource>>) -> Result<Arc<Cluster>, tls::TlsError> {
        let tls = match &spec.tls {
            UpstreamTls::Disabled => None,
            UpstreamTls::IstioMutual { sni, identities } => match identity {
                Some(identity) => {
                    Some(TlsOrigination::new(tls::mesh_client_config(identity, identities.clone(), spec.http2)?, sni)?)
                }
                None => None,
            },
            UpstreamTls::Simple { sni, ca_certificates, client } => {
                let client = match client {
                    Some((cert, key)) => {
                        Some(CertSource::load(CertFiles::Pem { cert: cert.clone(), key: key.clone(), roots: None })?)
                    }
                    None => None,
                };
                Some(TlsOrigination::new(tls::simple_client_config(ca_certificates, client, spec.http2)?, sni)?)
            }
        };
        let connector = Connector { connect_timeout: spec.connect_timeout, tls: tls.map(Arc::new) };
        let endpoints = spec
            .endpoints
            .iter()
            .map(|e| EndpointState {
                spec: Arc::new(e.clone()),
                active: AtomicUsize::new(0),
                outlier: Mutex::default(),
                pool: Mutex::default(),
                connecting: tokio::sync::Mutex::default(),
            })
            .collect();
        let interval = spec.outlier.as_ref().map_or(Duration::from_secs(10), |o| o.interval);
        Ok(Arc::new(Cluster {
            requests: Arc::new(Semaphore::new(spec.max_requests.min(Semaphore::MAX_PERMITS))),
            // HTTP/2 multiplexes, so maxConnections does not bound concurrent requests there.
            connections: (!spec.http2 && spec.max_connections < UNLIMITED)
                .then(|| Arc::new(Semaphore::new(spec.max_connections))),
            pending: Arc::new(AtomicUsize::new(0)),
            retries: Arc::new(Semaphore::new(spec.max_retries.min(Semaphore::MAX_PERMITS))),
            endpoints,
            rr: AtomicUsize::new(0),
            next_sweep: Mutex::new(later(interval)),
            spec,
            connector,
        }))
    }

    /// Chooses an endpoint: not ejected, preferably not one of `previous` (Envoy's previous-hosts retry
    /// predicate), by the cluster's load-balancing policy.
    pub fn pick(&self, previous: &[Arc<str>]) -> Result<Picked, ProxyError> {
        self.sweep();
        if previous.is_empty() && self.spec.outlier.is_none() {
            // Nothing ejected, nothing to avoid: every endpoint is a candidate (the common case, without
            // building candidate lists for every request).
            return self.choose(None);
        }
        let healthy: Vec<usize> =
            (0..self.endpoints.len()).filter(|&i| self.outlier(i).ejected_until.is_none()).collect();
        if healthy.is_empty() {
            return Err(ProxyError::NoHealthyUpstream);
        }
        let fresh: Vec<usize> =
            healthy.iter().copied().filter(|&i| !previous.contains(&self.endpoints[i].spec.authority)).collect();
        let candidates = if fresh.is_empty() { healthy } else { fresh };
        self.choose(Some(&candidates))
    }

    /// Applies the load-balancing policy to the endpoint indexes in `candidates` (`None`: every endpoint).
    fn choose(&self, candidates: Option<&[usize]>) -> Result<Picked, ProxyError> {
        let count = candidates.map_or(self.endpoints.len(), <[usize]>::len);
        if count == 0 {
            return Err(ProxyError::NoHealthyUpstream);
        }
        let nth = |n: usize| candidates.map_or(n, |c| c[n]);
        let index = match self.spec.lb {
            LbPolicy::RoundRobin => nth(self.rr.fetch_add(1, Ordering::Relaxed) % count),
            LbPolicy::Random => nth(fastrand::usize(..count)),
            LbPolicy::LeastRequest => {
                // Envoy's power of two choices.
                let a = nth(fastrand::usize(..count));
                let b = nth(fastrand::usize(..count));
                let load = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        Ok(Picked { index, spec: Arc::clone(&self.endpoints[index].spec) })
    }

    fn outlier(&self, index: usize) -> std::sync::MutexGuard<'_, OutlierState> {
        lock(&self.endpoints[index].outlier)
    }

    /// Returns ejected endpoints whose time is up, once per `interval`, as Envoy's outlier sweep does.
    fn sweep(&self) {
        let Some(settings) = &self.spec.outlier else { return };
        let now = Instant::now();
        {
            let mut next = self.next_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if now < *next {
                return;
            }
            *next = later(settings.interval);
        }
        for i in 0..self.endpoints.len() {
            let mut state = self.outlier(i);
            if state.ejected_until.is_some_and(|until| until <= now) {
                state.ejected_until = None;
                tracing::info!(cluster = %self.spec.name, endpoint = %self.endpoints[i].spec.authority, "outlier detection: endpoint returned");
            }
        }
    }

    /// Feeds a result to outlier detection. `status` is `None` for local-origin failures (connect failure,
    /// reset, timeout), which Envoy counts as 503 when it does not split them out.
    pub fn record(&self, index: usize, status: Option<u16>) {
        let Some(settings) = &self.spec.outlier else { return };
        let code = status.unwrap_or(503);
        let ejected_now = (0..self.endpoints.len()).filter(|&i| self.outlier(i).ejected_until.is_some()).count();
        let mut state = self.outlier(index);
        if code >= 500 {
            state.consecutive_5xx += 1;
            if matches!(code, 502..=504) {
                state.consecutive_gateway += 1;
            } else {
                state.consecutive_gateway = 0;
            }
        } else {
            state.consecutive_5xx = 0;
            state.consecutive_gateway = 0;
            return;
        }
        let tripped = (settings.consecutive_5xx > 0 && state.consecutive_5xx >= settings.consecutive_5xx)
            || (settings.consecutive_gateway > 0 && state.consecutive_gateway >= settings.consecutive_gateway);
        // Envoy ejects while the ejected share is below maxEjectionPercent (so at least one can go).
        let below_max = ejected_now * 100 < settings.max_ejection_percent as usize * self.endpoints.len();
        if tripped && state.ejected_until.is_none() && below_max {
            state.times_ejected = state.times_ejected.saturating_add(1);
            // Envoy: base × ejections, capped at max(maxEjectionTime, base) with its 300 s default.
            let ejection = settings
                .base_ejection
                .saturating_mul(state.times_ejected)
                .min(MAX_EJECTION.max(settings.base_ejection));
            state.ejected_until = Some(later(ejection));
            state.consecutive_5xx = 0;
            state.consecutive_gateway = 0;
            tracing::info!(cluster = %self.spec.name, endpoint = %self.endpoints[index].spec.authority, "outlier detection: endpoint ejected");
        }
    }

    /// Admits a request under the connection-pool limits: over `http2MaxRequests`, or with
    /// `http1MaxPendingRequests` already waiting for one of `maxConnections`, it overflows (503 UO).
    pub async fn admit(self: &Arc<Self>, picked: &Picked) -> Result<Admission, ProxyError> {
        let request = self.requests.clone().try_acquire_owned().map_err(|_| ProxyError::Overflow("max requests"))?;
        let connection = match &self.connections {
            None => None,
            Some(connections) => match connections.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    if self.pending.fetch_add(1, Ordering::AcqRel) >= self.spec.max_pending {
                        self.pending.fetch_sub(1, Ordering::AcqRel);
                        return Err(ProxyError::Overflow("pending requests"));
                    }
                    let permit = connections.clone().acquire_owned().await;
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    Some(permit.map_err(|_| ProxyError::Overflow("connection pool closed"))?)
                }
            },
        };
        self.endpoints[picked.index].active.fetch_add(1, Ordering::Relaxed);
        Ok(Admission { _request: request, _connection: connection, active: (self.clone(), picked.index) })
    }

    /// A slot for one retry, if `maxRetries` allows it.
    pub fn retry_permit(&self) -> Option<RetryPermit> {
        self.retries.clone().try_acquire_owned().ok().map(|permit| RetryPermit { _permit: permit })
    }

    /// Sends `request` (whose URI is the origin-form path) to `picked`, on a pooled connection or a new one.
    /// The admission is held until the response body ends. Also returns the connection's local address.
    pub async fn send(
        &self,
        picked: &Picked,
        admission: Admission,
        request: &Request<Bytes>,
    ) -> Result<(Response<ProxyBody>, Arc<str>), ProxyError> {
        // A try abandoned by a timeout is dropped here mid-flight; it still counts as a failure.
        let mut outcome = Outcome { cluster: self, index: picked.index, recorded: false };
        let (mut response, local) = if self.spec.http2 {
            // Boxed, like the connecting in `send_http1`: its state would otherwise enlarge (and be
            // copied with) every HTTP/1 request's future as well.
            Box::pin(self.send_http2(picked, admission, request)).await?
        } else {
            self.send_http1(picked, admission, request).await?
        };
        outcome.recorded = true;
        self.record(picked.index, Some(response.status().as_u16()));
        // The downstream connection decides its own protocol version.
        *response.version_mut() = http::Version::default();
        Ok((response, local))
    }

    async fn send_http1(
        &self,
        picked: &Picked,
        admission: Admission,
        request: &Request<Bytes>,
    ) -> Result<(Response<ProxyBody>, Arc<str>), ProxyError> {
        let endpoint = &self.endpoints[picked.index];
        loop {
            let (upstream, pooled) = match self.checkout(endpoint) {
                Some(upstream) => (upstream, true),
                // Boxed: connecting (TCP, perhaps TLS) takes over a kilobyte of future state, which would
                // otherwise make every request's future that much larger, and be copied with it, for what
                // a pooled connection never needs.
                None => (Box::pin(self.connect_http1(endpoint)).await?, false),
            };
            let Upstream { connection, local, requests, .. } = upstream;
            match connection.send(request).await {
                Ok(response) => {
                    let local_address = Arc::clone(&local);
                    let response = response.map(|body| {
                        let mut body = PooledBody { body, local, requests: requests + 1, guard: admission };
                        if hyper::body::Body::is_end_stream(&body.body) {
                            // No body will be polled (HEAD, 204, 304, empty): the connection is free now.
                            body.recycle();
                        }
                        body.boxed_unsync()
                    });
                    return Ok((response, local_address));
                }
                // A pooled connection the upstream closed before the request went out: the request was not
                // sent, so it goes out on another connection (as Envoy does), not as a retry.
                Err(err) if err.unsent() && pooled => continue,
                Err(err) => return Err(ProxyError::UpstreamReset(error_chain(&err))),
            }
        }
    }

    async fn send_http2(
        &self,
        picked: &Picked,
        admission: Admission,
        request: &Request<Bytes>,
    ) -> Result<(Response<ProxyBody>, Arc<str>), ProxyError> {
        let endpoint = &self.endpoints[picked.index];
        // HTTP/2 names scheme and authority in pseudo-headers, taken from an absolute URI.
        let scheme = if picked.spec.tls && self.client_has_tls() { "https" } else { "http" };
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: http::Uri = format!("{scheme}://{}{path}", picked.spec.authority)
            .parse()
            .map_err(|e| ProxyError::ConnectFailure(format!("bad endpoint address: {e}")))?;
        let mut message = Request::new(Full::new(request.body().clone()));
        *message.method_mut() = request.method().clone();
        *message.uri_mut() = uri;
        *message.version_mut() = http::Version::HTTP_2;
        *message.headers_mut() = request.headers().clone();
        loop {
            let (mut sender, local, pooled) = match endpoint.live_http2() {
                Some((sender, local)) => (sender, local, true),
                None => {
                    let _connecting = endpoint.connecting.lock().await;
                    // Another request may have opened it while this one waited.
                    match endpoint.live_http2() {
                        Some((sender, local)) => (sender, local, true),
                        None => {
                            // Boxed, like `connect_http1` in `send_http1`.
                            let (sender, local) = Box::pin(self.connect_http2(endpoint)).await?;
                            (sender, local, false)
                        }
                    }
                }
            };
            if sender.ready().await.is_err() {
                lock(&endpoint.pool).shared = None;
                if pooled {
                    continue;
                }
                return Err(ProxyError::UpstreamReset("connection closed before the request was sent".into()));
            }
            match sender.try_send_request(message).await {
                Ok(response) => {
                    let response = response.map(|body| {
                        GuardedBody { inner: body.map_err(BoxError::from).boxed_unsync(), _guard: admission }
                            .boxed_unsync()
                    });
                    return Ok((response, local));
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if pooled => message = unsent,
                    _ => return Err(ProxyError::UpstreamReset(error_chain(err.error()))),
                },
            }
        }
    }

    /// An idle HTTP/1 connection to `endpoint` that its upstream has not closed, if there is one.
    fn checkout(&self, endpoint: &EndpointState) -> Option<Upstream> {
        loop {
            let mut upstream = lock(&endpoint.pool).idle.pop()?;
            if !self.expired(&upstream) && !upstream.connection.is_closed() {
                return Some(upstream);
            }
        }
    }

    /// Whether `upstream` has been idle longer than the cluster's `idleTimeout`.
    fn expired(&self, upstream: &Upstream) -> bool {
        upstream.idle_since.elapsed() >= self.spec.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }

    /// Pools an HTTP/1 connection whose response has ended, unless it has served
    /// `maxRequestsPerConnection`.
    fn recycle(&self, index: usize, upstream: Upstream) {
        if self.spec.max_requests_per_connection.is_some_and(|max| upstream.requests >= max) {
            return;
        }
        let mut pool = lock(&self.endpoints[index].pool);
        // The oldest connections are the ones to have expired.
        let stale = pool.idle.iter().take_while(|u| self.expired(u)).count();
        pool.idle.drain(..stale);
        pool.idle.push(upstream);
    }

    /// Opens a connection to `endpoint`: TCP, then TLS when the endpoint takes it.
    async fn open(&self, endpoint: &EndpointState) -> Result<UpstreamIo, ProxyError> {
        let tls = endpoint.spec.tls && self.client_has_tls();
        self.connector
            .connect(&endpoint.spec.authority, tls)
            .await
            .map_err(|error| ProxyError::ConnectFailure(error_chain(&error)))
    }

    async fn connect_http1(&self, endpoint: &EndpointState) -> Result<Upstream, ProxyError> {
        let io = self.open(endpoint).await?;
        let local: Arc<str> = io.local().into();
        Ok(Upstream { connection: h1::Connection::new(io), local, requests: 0, idle_since: Instant::now() })
    }

    /// Opens the endpoint's shared HTTP/2 connection, whose driver is a task of its own.
    async fn connect_http2(
        &self,
        endpoint: &EndpointState,
    ) -> Result<(http2::SendRequest<Full<Bytes>>, Arc<str>), ProxyError> {
        let io = self.open(endpoint).await?;
        let local: Arc<str> = io.local().into();
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|error| ProxyError::ConnectFailure(error_chain(&error)))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "upstream HTTP/2 connection failed");
            }
        });
        lock(&endpoint.pool).shared = Some((sender.clone(), Arc::clone(&local)));
        Ok((sender, local))
    }

    fn client_has_tls(&self) -> bool {
        !matches!(self.spec.tls, UpstreamTls::Disabled)
    }

    /// Endpoint addresses currently ejected (for tests and the admin page).
    pub fn ejected(&self) -> Vec<String> {
        (0..self.endpoints.len())
            .filter(|&i| self.outlier(i).ejected_until.is_some())
            .map(|i| self.endpoints[i].spec.authority.to_string())
            .collect()
    }
}

/// Records a local-origin failure for outlier detection unless a response was recorded.
struct Outcome<'a> {
    cluster: &'a Cluster,
    index: usize,
    recorded: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.cluster.record(self.index, None);
        }
    }
}

/// `source: inner: innermost`, with TLS failures prefixed as Envoy's transport failure reasons are.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = err.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    if parts.is_empty() {
        parts.push(err.to_string());
    }
    parts.dedup();
    parts.join(": ")
}

/// An HTTP/2 response body that keeps its request's circuit-breaker capacity until it ends or is dropped.
struct GuardedBody {
    inner: ProxyBody,
    _guard: Admission,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An HTTP/1 response body that keeps its request's circuit-breaker capacity until it ends or is dropped,
/// and pools its connection when it has ended (a body dropped before its end closes the connection).
struct PooledBody {
    body: h1::Body<UpstreamIo>,
    local: Arc<str>,
    requests: u32,
    guard: Admission,
}

impl PooledBody {
    fn recycle(&mut self) {
        if let Some(connection) = self.body.take_reusable() {
            let (cluster, index) = &self.guard.active;
            let upstream = Upstream {
                connection,
                local: Arc::clone(&self.local),
                requests: self.requests,
                idle_since: Instant::now(),
            };
            cluster.recycle(*index, upstream);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // Hyper stops polling a body that says it has ended, so the last frame may be all it sees.
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Ok(_)))) && self.body.is_end_stream() {
            self.recycle();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Connector

struct TlsOrigination {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsOrigination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOrigination").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsOrigination {
    fn new(config: rustls::ClientConfig, sni: &str) -> Result<TlsOrigination, tls::TlsError> {
        let server_name =
            ServerName::try_from(sni.to_owned()).map_err(|e| tls::TlsError::Invalid(format!("SNI {sni:?}: {e}")))?;
        Ok(TlsOrigination { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name })
    }
}

/// Opens upstream connections: TCP with the cluster's connect timeout, then TLS for endpoints that take it.
#[derive(Debug)]
struct Connector {
    connect_timeout: Duration,
    tls: Option<Arc<TlsOrigination>>,
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("delayed connect error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection timeout")]
    Timeout,
    #[error("TLS_error: {0}")]
    Tls(std::io::Error),
}

impl Connector {
    async fn connect(&self, authority: &str, tls: bool) -> Result<UpstreamIo, ConnectError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        match &self.tls {
            Some(origination) if tls => {
                let stream = origination
                    .connector
                    .connect(origination.server_name.clone(), tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                Ok(UpstreamIo::Tls(Box::new(stream), local))
            }
            _ => Ok(UpstreamIo::Plain(tcp, local)),
        }
    }
}

/// An upstream connection's transport, with its local address.
enum UpstreamIo {
    Plain(TcpStream, String),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>, String),
}

impl UpstreamIo {
    fn local(&self) -> &str {
        match self {
            UpstreamIo::Plain(_, local) | UpstreamIo::Tls(_, local) => local,
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(io, _) => Pin::new(io).poll_read(cx, buf),
            UpstreamIo::Tls(io, _) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(io, _) => Pin::new(io).poll_write(cx, buf),
            UpstreamIo::Tls(io, _) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(io, _) => Pin::new(io).poll_flush(cx),
            UpstreamIo::Tls(io, _) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(io, _) => Pin::new(io).poll_shutdown(cx),
            UpstreamIo::Tls(io, _) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::mesh::LoadReport;

    fn mesh(yaml: &str) -> MeshConfig {
        let mut report = LoadReport::default();
        report.parse_str("t.yaml", yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        MeshConfig::new(report.resources)
    }

    const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80}, {name: grpc, port: 90}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: web, version: v1, security.istio.io/tlsMode: istio}, serviceAccount: web}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-2, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: web, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 10}}
    portLevelSettings:
    - port: {number: 90}
      loadBalancer: {simple: ROUND_ROBIN}
      tls: {mode: DISABLE}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 3}}, outlierDetection: {consecutiveGatewayErrors: 2}}
"#;

    fn ctx() -> ClusterContext {
        ClusterContext { client_namespace: "shop".into(), trust_domain: "cluster.local".into(), has_identity: true }
    }

    #[test]
    fn port_level_and_subset_policies_override_the_rule() {
        let mesh = mesh(MESH);
        let host = "web.shop.svc.cluster.local";
        let http = outbound_spec(&mesh, &ctx(), host, 80, None).unwrap();
        assert_eq!((http.lb, http.max_connections), (LbPolicy::Random, 10));
        // Auto mTLS: only the endpoint with a sidecar gets TLS.
        let tls: Vec<bool> = http.endpoints.iter().map(|e| e.tls).collect();
        assert_eq!(tls, [true, false]);
        let UpstreamTls::IstioMutual { sni, identities } = &http.tls else { panic!("{:?}", http.tls) };
        assert_eq!(sni, "outbound_.80_._.web.shop.svc.cluster.local");
        assert_eq!(identities.len(), 2);
        let grpc = outbound_spec(&mesh, &ctx(), host, 90, None).unwrap();
        assert_eq!((grpc.lb, grpc.http2, &grpc.tls), (LbPolicy::RoundRobin, true, &UpstreamTls::Disabled));
        assert!(grpc.endpoints.iter().all(|e| !e.tls));
        let v1 = outbound_spec(&mesh, &ctx(), host, 80, Some("v1")).unwrap();
        assert_eq!(&*v1.name, "outbound|80|v1|web.shop.svc.cluster.local");
        // As in Istio, a subset's connectionPool replaces the rule's whole connectionPool.
        assert_eq!((v1.endpoints.len(), v1.max_pending, v1.max_connections), (1, 3, UNLIMITED));
        assert_eq!(v1.outlier.as_ref().map(|o| (o.consecutive_5xx, o.consecutive_gateway)), Some((5, 2)));
        assert!(outbound_spec(&mesh, &ctx(), host, 80, Some("v9")).is_none());
        assert!(outbound_spec(&mesh, &ctx(), "nope.shop.svc.cluster.local", 80, None).is_none());
    }

    #[test]
    fn load_balancers_spread_over_healthy_endpoints() {
        let mut spec = outbound_spec(&mesh(MESH), &ctx(), "web.shop.svc.cluster.local", 80, None).unwrap();
        for lb in [LbPolicy::RoundRobin, LbPolicy::Random, LbPolicy::LeastRequest] {
            spec.lb = lb;
            let cluster = Cluster::new(spec.clone(), None).unwrap();
            let first = (0..1000).filter(|_| cluster.pick(&[]).unwrap().index == 0).count();
            // Round robin alternates; the random pickers' 50% has sd 16 over 1000 picks: +-100 is 6 sd.
            assert!((400..=600).contains(&first), "{lb:?}: {first}");
            let avoided = cluster.pick(&["10.0.0.1:80".into()]).unwrap();
            assert_eq!(avoided.index, 1, "{lb:?} avoids previously tried hosts");
        }
    }
}
