//! Starting a proxy: load the config, build the first snapshot, bind listeners, start the admin
//! listener, the telemetry writer (and OTLP exporter) and the reloader. [`Running`] stops them all.

use crate::config::{RoleSpec, Shared, SharedSnapshot, Snapshot, View, spawn_reloader};
use crate::otlp::{OtlpOptions, ProxyResource};
use crate::server::{Limits, ListenerContext, serve};
use crate::stack::{self, SelfInfo, Side, StackConfig};
use crate::telemetry::{AccessLogFormat, AccessLogTarget, Telemetry, TelemetryError};
use crate::tls::{CertFiles, CertSource};
use bytes::Bytes;
use http_body_util::Full;
use meshlens_model::SpiffeId;
use meshlens_model::mesh::{Kind, LoadReport, MeshConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the proxy's own certificate comes from.
#[derive(Debug, Clone, Default)]
pub enum IdentityOptions {
    /// No identity: no mTLS origination or termination.
    #[default]
    None,
    /// Issue a workload certificate in memory from the mesh CA in this directory (`meshlens ca init`).
    CaDir(PathBuf),
    /// PEM files (`meshlens ca issue` output), watched for rotation.
    Files { cert: PathBuf, key: PathBuf, root: PathBuf },
}

/// Options every role has.
#[derive(Debug, Clone)]
pub struct CommonOptions {
    pub config: Vec<PathBuf>,
    pub access_log: AccessLogTarget,
    pub access_log_format: AccessLogFormat,
    pub admin: Option<SocketAddr>,
    pub identity: IdentityOptions,
    pub trust_domain: String,
    /// How often config files and certificates are checked for changes.
    pub reload_interval: Duration,
    pub limits: Limits,
    /// Spans and access-log records to an OTLP/HTTP endpoint.
    pub otlp: Option<OtlpOptions>,
}

impl Default for CommonOptions {
    fn default() -> Self {
        CommonOptions {
            config: Vec::new(),
            access_log: AccessLogTarget::Stdout,
            access_log_format: AccessLogFormat::IstioText,
            admin: None,
            identity: IdentityOptions::None,
            trust_domain: "cluster.local".into(),
            reload_interval: Duration::from_secs(2),
            limits: Limits::default(),
            otlp: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct IngressOptions {
    pub common: CommonOptions,
    /// Gateway/Ingress port -> local bind address; unlisted ports bind `0.0.0.0:PORT`.
    pub listen: BTreeMap<u16, SocketAddr>,
    /// `DIR/<credentialName>/{tls.crt,tls.key,ca.crt}` for HTTPS servers.
    pub credential_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub common: CommonOptions,
    pub namespace: String,
    pub workload: String,
    /// The local application inbound traffic is forwarded to.
    pub app: SocketAddr,
    /// The HTTP proxy address the application sends outbound requests to.
    pub outbound: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("mesh config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("identity: {0}")]
    Identity(#[from] crate::tls::TlsError),
    #[error("{what} {addr}: {source}")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("{0}")]
    Invalid(String),
}

/// A started proxy.
#[derive(Debug)]
pub struct Running {
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    snapshot: SharedSnapshot,
    telemetry: Arc<Telemetry>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long shutdown waits for the OTLP exporter to send what is queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Running {
    /// Bound addresses by listener name (`port-8080`, `inbound-9080`, `outbound`).
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.current()
    }

    /// Stops accepting, lets in-flight requests finish, sends the queued OTLP items (waiting up to 5 s),
    /// stops background tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.telemetry.flush(FLUSH_TIMEOUT).await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

fn load_mesh(paths: &[PathBuf]) -> Result<MeshConfig, StartError> {
    if paths.is_empty() {
        return Err(StartError::Invalid("no config files given (-f)".into()));
    }
    let report = LoadReport::load_paths(paths);
    if !report.errors.is_empty() {
        return Err(crate::config::ConfigError(report.errors.iter().map(ToString::to_string).collect()).into());
    }
    Ok(MeshConfig::new(report.resources))
}

fn identity(options: &IdentityOptions, spiffe: &SpiffeId) -> Result<Option<Arc<CertSource>>, StartError> {
    Ok(match options {
        IdentityOptions::None => None,
        IdentityOptions::CaDir(dir) => {
            Some(CertSource::load(CertFiles::Ca { dir: dir.clone(), spiffe: spiffe.clone() })?)
        }
        IdentityOptions::Files { cert, key, root } => {
            Some(CertSource::load(CertFiles::Pem { cert: cert.clone(), key: key.clone(), roots: Some(root.clone()) })?)
        }
    })
}

async fn bind(what: String, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
}

struct Started {
    telemetry: Arc<Telemetry>,
    snapshot: SharedSnapshot,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    admin: Option<SocketAddr>,
}

async fn start_common(
    common: &CommonOptions,
    shared: &Arc<Shared>,
    mesh: MeshConfig,
    resource: ProxyResource,
) -> Result<Started, StartError> {
    let snapshot = SharedSnapshot::new(Snapshot::build(mesh, shared, None)?);
    let otlp = common.otlp.clone().map(|options| (options, resource));
    let telemetry = Arc::new(Telemetry::start(common.access_log.clone(), common.access_log_format, otlp).await?);
    let (shutdown, _) = watch::channel(false);
    let mut tasks =
        vec![spawn_reloader(common.config.clone(), common.reload_interval, shared.clone(), snapshot.clone())];
    let admin = match common.admin {
        Some(addr) => {
            let listener = bind("admin listener".into(), addr).await?;
            let bound =
                listener.local_addr().map_err(|source| StartError::Bind { what: "admin".into(), addr, source })?;
            tasks.push(tokio::spawn(admin(listener, telemetry.clone(), shutdown.subscribe())));
            Some(bound)
        }
        None => None,
    };
    Ok(Started { telemetry, snapshot, shutdown, tasks, admin })
}

fn stack_config(side: Side, telemetry: &Arc<Telemetry>, me: &SelfInfo, limits: &Limits) -> StackConfig {
    StackConfig {
        side,
        telemetry: telemetry.clone(),
        me: Arc::new(me.clone()),
        max_request_body: limits.max_request_body,
        mirror_slots: Arc::new(tokio::sync::Semaphore::new(256)),
    }
}

/// Starts an ingress gateway: one listener per Gateway server port (and 80/443 for Ingresses).
pub async fn start_ingress(options: IngressOptions) -> Result<Running, StartError> {
    let common = &options.common;
    let mesh = load_mesh(&common.config)?;
    let spiffe = SpiffeId::new(&common.trust_domain, "istio-system", "istio-ingressgateway-service-account")
        .map_err(|e| StartError::Invalid(e.to_string()))?;
    let identity = identity(&common.identity, &spiffe)?;
    let me = SelfInfo {
        workload: Some("istio-ingressgateway".into()),
        namespace: Some("istio-system".into()),
        principal: identity.as_ref().map(|_| spiffe.to_string().into()),
    };
    let shared = Shared::new(RoleSpec::Gateway, identity, common.trust_domain.clone(), options.credential_dir.clone());
    let resource = ProxyResource {
        workload: me.workload.clone(),
        namespace: me.namespace.clone(),
        address: options.listen.values().next().map(|a| a.ip().to_string()),
        gateway: true,
    };
    let mut started = start_common(common, &shared, mesh, resource).await?;
    let ports: Vec<u16> = match &started.snapshot.current().view {
        View::Gateway(ports) => ports.keys().copied().collect(),
        View::Sidecar(_) => Vec::new(),
    };
    if ports.is_empty() {
        return Err(StartError::Invalid("the config has no Gateway HTTP/HTTPS servers and no Ingress".into()));
    }
    let service =
        stack::build(started.snapshot.clone(), stack_config(Side::Gateway, &started.telemetry, &me, &common.limits));
    let mut listeners = Vec::new();
    for port in ports {
        let addr = options.listen.get(&port).copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)));
        let listener = bind(format!("gateway port {port}"), addr).await?;
        let bound =
            listener.local_addr().map_err(|source| StartError::Bind { what: format!("port {port}"), addr, source })?;
        listeners.push((format!("port-{port}"), bound));
        let ctx = ListenerContext {
            side: Side::Gateway,
            port,
            snapshot: started.snapshot.clone(),
            service: service.clone(),
            limits: common.limits.clone(),
            shutdown: started.shutdown.subscribe(),
        };
        started.tasks.push(tokio::spawn(serve(listener, ctx)));
    }
    Ok(Running {
        listeners,
        admin: started.admin,
        snapshot: started.snapshot,
        telemetry: started.telemetry,
        shutdown: started.shutdown,
        tasks: started.tasks,
    })
}

/// Starts a sidecar: inbound listeners on the workload's own address and ports, and the outbound HTTP proxy.
pub async fn start_sidecar(options: SidecarOptions) -> Result<Running, StartError> {
    let common = &options.common;
    let mesh = load_mesh(&common.config)?;
    let me = mesh
        .workloads()
        .into_iter()
        .find(|w| w.namespace == options.namespace && w.name == options.workload && w.kind != Kind::Deployment)
        .ok_or_else(|| {
            StartError::Invalid(format!("workload {}/{} is not in the config", options.namespace, options.workload))
        })?;
    let spiffe = SpiffeId::new(&common.trust_domain, &me.namespace, &me.service_account)
        .map_err(|e| StartError::Invalid(e.to_string()))?;
    let identity = identity(&common.identity, &spiffe)?;
    let self_info = SelfInfo {
        workload: Some(me.name.clone()),
        namespace: Some(me.namespace.clone()),
        principal: identity.as_ref().map(|_| spiffe.to_string().into()),
    };
    let role =
        RoleSpec::Sidecar { namespace: options.namespace.clone(), name: options.workload.clone(), app: options.app };
    let shared = Shared::new(role, identity, common.trust_domain.clone(), None);
    let resource = ProxyResource {
        workload: self_info.workload.clone(),
        namespace: self_info.namespace.clone(),
        address: me.address.clone(),
        gateway: false,
    };
    let mut started = start_common(common, &shared, mesh, resource).await?;
    let snapshot = started.snapshot.current();
    let View::Sidecar(view) = &snapshot.view else {
        return Err(StartError::Invalid("sidecar snapshot expected".into()));
    };
    let address = view.me.address.clone().unwrap_or_default();
    let ip: std::net::IpAddr = address
        .parse()
        .map_err(|_| StartError::Invalid(format!("workload address {address:?} is not an IP address")))?;
    let mut listeners = Vec::new();
    let inbound = stack::build(
        started.snapshot.clone(),
        stack_config(Side::Inbound, &started.telemetry, &self_info, &common.limits),
    );
    for port in view.inbound.keys().copied() {
        let addr = SocketAddr::new(ip, port);
        let listener = bind(format!("inbound port {port}"), addr).await?;
        listeners.push((format!("inbound-{port}"), addr));
        let ctx = ListenerContext {
            side: Side::Inbound,
            port,
            snapshot: started.snapshot.clone(),
            service: inbound.clone(),
            limits: common.limits.clone(),
            shutdown: started.shutdown.subscribe(),
        };
        started.tasks.push(tokio::spawn(serve(listener, ctx)));
    }
    let outbound = stack::build(
        started.snapshot.clone(),
        stack_config(Side::Outbound, &started.telemetry, &self_info, &common.limits),
    );
    let listener = bind("outbound listener".into(), options.outbound).await?;
    let bound = listener.local_addr().map_err(|source| StartError::Bind {
        what: "outbound".into(),
        addr: options.outbound,
        source,
    })?;
    listeners.push(("outbound".into(), bound));
    let ctx = ListenerContext {
        side: Side::Outbound,
        port: bound.port(),
        snapshot: started.snapshot.clone(),
        service: outbound,
        limits: common.limits.clone(),
        shutdown: started.shutdown.subscribe(),
    };
    started.tasks.push(tokio::spawn(serve(listener, ctx)));
    Ok(Running {
        listeners,
        admin: started.admin,
        snapshot: started.snapshot,
        telemetry: started.telemetry,
        shutdown: started.shutdown,
        tasks: started.tasks,
    })
}

/// The admin listener: `/ready` and `/stats/prometheus`, as Envoy's admin interface names them.
async fn admin(listener: TcpListener, telemetry: Arc<Telemetry>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (status, body) = match request.uri().path() {
                    "/ready" => (http::StatusCode::OK, "LIVE\n".to_owned()),
                    "/stats/prometheus" => (http::StatusCode::OK, telemetry.render_prometheus()),
                    _ => (http::StatusCode::NOT_FOUND, "not found\n".to_owned()),
                };
                let mut response = http::Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                std::future::ready(Ok::<_, std::convert::Infallible>(response))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
