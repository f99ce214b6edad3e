//! Config snapshots: everything compiled from one load of the mesh config (route tables, clusters,
//! policies, TLS server configs), shared behind an `Arc` so that a request keeps the snapshot it started
//! with while a reload swaps in the next one. A reload that fails to load or compile is logged and
//! rejected; the old snapshot stays.

use crate::authz::Authorizer;
use crate::cluster::{Cluster, ClusterContext, ClusterSpec, outbound_spec};
use crate::error::ProxyError;
use crate::route::{CompileError, RouteTable, Target};
use crate::tls::{self, CertFiles, CertSource, ClientVerifier};
use foldhash::{HashMap, HashMapExt as _};
use meshlens_model::mesh::k8s::ServicePort;
use meshlens_model::mesh::networking::ServerTlsMode;
use meshlens_model::mesh::security::MtlsMode;
use meshlens_model::mesh::{Kind, LoadReport, MeshConfig, Resource, WorkloadRef, host_matches, meta::labels_match};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Why a config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

impl From<Vec<CompileError>> for ConfigError {
    fn from(errors: Vec<CompileError>) -> Self {
        ConfigError(errors.iter().map(ToString::to_string).collect())
    }
}

/// What the proxy is, as far as building a snapshot goes.
#[derive(Debug, Clone)]
pub enum RoleSpec {
    Gateway,
    Sidecar { namespace: String, name: String, app: SocketAddr },
}

/// Things that outlive snapshots: the workload identity and gateway credentials (reloaded from files).
#[derive(Debug)]
pub struct Shared {
    pub role: RoleSpec,
    pub identity: Option<Arc<CertSource>>,
    pub trust_domain: String,
    pub credential_dir: Option<PathBuf>,
    credentials: Mutex<HashMap<String, Arc<CertSource>>>,
}

impl Shared {
    pub fn new(
        role: RoleSpec,
        identity: Option<Arc<CertSource>>,
        trust_domain: String,
        credential_dir: Option<PathBuf>,
    ) -> Arc<Shared> {
        Arc::new(Shared { role, identity, trust_domain, credential_dir, credentials: Mutex::default() })
    }

    /// `DIR/<name>/{tls.crt,tls.key[,ca.crt]}`, loaded once and then refreshed with the identity.
    fn credential(&self, name: &str) -> Result<Arc<CertSource>, String> {
        let mut credentials = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = credentials.get(name) {
            return Ok(source.clone());
        }
        let dir =
            self.credential_dir.as_ref().ok_or_else(|| format!("credentialName {name:?} needs --credential-dir"))?;
        let base = dir.join(name);
        let ca = base.join("ca.crt");
        let files =
            CertFiles::Pem { cert: base.join("tls.crt"), key: base.join("tls.key"), roots: ca.exists().then_some(ca) };
        let source = CertSource::load(files).map_err(|e| format!("credential {name:?}: {e}"))?;
        credentials.insert(name.to_owned(), source.clone());
        Ok(source)
    }

    /// Re-reads rotated certificate files.
    pub fn refresh_certificates(&self) {
        let credentials: Vec<Arc<CertSource>> =
            self.credentials.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for source in self.identity.iter().chain(&credentials) {
            match source.refresh() {
                Ok(true) => tracing::info!("reloaded rotated certificate"),
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, "rotated certificate not usable yet; keeping the previous one"),
            }
        }
    }
}

/// A gateway server's TLS, ready for handshakes.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub hosts: Vec<String>,
    pub config: Arc<rustls::ServerConfig>,
}

/// One gateway listener port.
#[derive(Debug, Clone, Default)]
pub struct GatewayPort {
    pub table: RouteTable,
    /// `namespace/name` of the Gateways with a server on this port.
    pub gateways: Vec<String>,
    /// TLS servers, matched by SNI; empty for plaintext ports.
    pub tls: Vec<ServerTls>,
    pub plaintext: bool,
}

/// A sidecar's view of itself.
#[derive(Debug, Clone)]
pub struct SidecarView {
    pub me: WorkloadRef,
    pub outbound: RouteTable,
    /// Every name the application may give a Service (its bare name in this workload's namespace,
    /// `name.ns`, `name.ns.svc`, the FQDN, its cluster IP), to the Service's FQDN.
    service_names: HashMap<String, String>,
    /// Namespaces of the mesh, for names no Service has.
    namespaces: Vec<String>,
    /// Inbound tables and PeerAuthentication modes by workload port.
    pub inbound: BTreeMap<u16, (RouteTable, MtlsMode, Option<String>)>,
    pub authz: Authorizer,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
}

#[derive(Debug, Clone)]
pub enum View {
    Gateway(BTreeMap<u16, GatewayPort>),
    Sidecar(Box<SidecarView>),
}

/// Everything compiled from one load of the config.
#[derive(Debug)]
pub struct Snapshot {
    pub mesh: MeshConfig,
    pub view: View,
    clusters: HashMap<String, Arc<Cluster>>,
    /// The outbound clusters by Service host, so that a request finds its cluster without formatting the
    /// name.
    outbound: HashMap<String, Vec<Arc<Cluster>>>,
    /// Each Service's ports by FQDN, so that a request resolves its destination port without a lookup in
    /// the mesh.
    service_ports: HashMap<String, Vec<ServicePort>>,
}

impl Snapshot {
    /// Loads `paths` and compiles them; any load error rejects the whole config.
    pub fn load(paths: &[PathBuf], shared: &Shared, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigError> {
        let report = LoadReport::load_paths(paths);
        if !report.errors.is_empty() {
            return Err(ConfigError(report.errors.iter().map(ToString::to_string).collect()));
        }
        Snapshot::build(MeshConfig::new(report.resources), shared, previous)
    }

    pub fn build(mesh: MeshConfig, shared: &Shared, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigError> {
        let (view, mut specs, client_namespace) = match &shared.role {
            RoleSpec::Gateway => {
                let ports = gateway_ports(&mesh, shared)?;
                (View::Gateway(ports), Vec::new(), "istio-system".to_owned())
            }
            RoleSpec::Sidecar { namespace, name, app } => {
                let (view, inbound_specs) = sidecar_view(&mesh, shared, namespace, name, *app)?;
                (View::Sidecar(Box::new(view)), inbound_specs, namespace.clone())
            }
        };
        let ctx = ClusterContext {
            client_namespace,
            trust_domain: shared.trust_domain.clone(),
            has_identity: shared.identity.is_some(),
        };
        // Every Service port (and subset) a request could name, plus what the routes name explicitly.
        let mut wanted: Vec<(String, u16, Option<String>)> = Vec::new();
        for service in mesh.services() {
            let host = meshlens_model::mesh::resolve_host(&service.metadata.name, service.metadata.ns());
            let subsets: Vec<Option<String>> = std::iter::once(None)
                .chain(
                    mesh.destination_rule_for(&host, &ctx.client_namespace)
                        .into_iter()
                        .flat_map(|dr| dr.spec.subsets.iter().map(|s| Some(s.name.clone()))),
                )
                .collect();
            for port in &service.spec.ports {
                for subset in &subsets {
                    wanted.push((host.clone(), port.port, subset.clone()));
                }
            }
        }
        wanted.sort();
        wanted.dedup();
        specs.extend(wanted.iter().filter_map(|(h, p, s)| outbound_spec(&mesh, &ctx, h, *p, s.as_deref())));
        let mut clusters = HashMap::new();
        for spec in specs {
            let reused = previous.and_then(|p| p.clusters.get(&*spec.name)).filter(|c| c.spec == spec).cloned();
            let cluster = match reused {
                Some(cluster) => cluster,
                None => Cluster::new(spec, shared.identity.as_ref()).map_err(|e| ConfigError(vec![e.to_string()]))?,
            };
            clusters.insert(cluster.spec.name.to_string(), cluster);
        }
        let service_ports = mesh
            .services()
            .map(|s| (meshlens_model::mesh::resolve_host(&s.metadata.name, s.metadata.ns()), s.spec.ports.clone()))
            .collect();
        let mut outbound: HashMap<String, Vec<Arc<Cluster>>> = HashMap::new();
        for cluster in clusters.values() {
            if let Some(host) = &cluster.spec.host {
                outbound.entry(host.to_string()).or_default().push(Arc::clone(cluster));
            }
        }
        Ok(Snapshot { mesh, view, clusters, outbound, service_ports })
    }

    /// The cluster a target names, resolving its port against the Service.
    pub fn cluster_for(&self, target: &Target, request_port: Option<u16>) -> Result<Arc<Cluster>, ProxyError> {
        if target.is_inbound() {
            return self
                .clusters
                .get(&target.host)
                .cloned()
                .ok_or_else(|| ProxyError::ClusterNotFound(target.host.clone()));
        }
        let host = target.service_host();
        // The Service's ports are looked up only when the target names no port number (most name one).
        let port =
            target.port.or_else(|| target.resolve_port(self.service_ports.get(host).map(Vec::as_slice), request_port));
        let port = port.ok_or_else(|| ProxyError::ClusterNotFound(host.to_owned()))?;
        let subset = target.subset.as_deref();
        let found = self
            .outbound
            .get(host)
            .and_then(|clusters| clusters.iter().find(|c| c.spec.port == port && c.spec.subset.as_deref() == subset));
        found
            .cloned()
            .ok_or_else(|| ProxyError::ClusterNotFound(format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))))
    }

    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(name).cloned()
    }
}

fn gateway_ports(mesh: &MeshConfig, shared: &Shared) -> Result<BTreeMap<u16, GatewayPort>, ConfigError> {
    let mut ports: BTreeMap<u16, GatewayPort> = BTreeMap::new();
    let mut hosts: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut redirect: BTreeMap<u16, bool> = BTreeMap::new();
    let mut errors = Vec::new();
    for loaded in mesh.of_kind(Kind::Gateway) {
        let Resource::Gateway(gateway) = &loaded.resource else { continue };
        let reference = format!("{}/{}", gateway.metadata.ns(), gateway.metadata.name);
        for server in &gateway.spec.servers {
            let Ok(number) = u16::try_from(server.port.number) else {
                errors.push(format!("Gateway {reference}: port {} out of range", server.port.number));
                continue;
            };
            let protocol = server.port.protocol.to_ascii_uppercase();
            if !matches!(protocol.as_str(), "HTTP" | "HTTPS" | "HTTP2" | "GRPC") {
                tracing::warn!(gateway = %reference, port = number, %protocol, "only HTTP and HTTPS gateway servers are served");
                continue;
            }
            let port = ports.entry(number).or_default();
            if !port.gateways.contains(&reference) {
                port.gateways.push(reference.clone());
            }
            let server_hosts: Vec<String> =
                server.hosts.iter().map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_owned()).collect();
            hosts.entry(number).or_default().extend(server_hosts.iter().cloned());
            let tls = server.tls.as_ref();
            let https_redirect = tls.is_some_and(|t| t.https_redirect) && protocol != "HTTPS";
            *redirect.entry(number).or_insert(true) &= https_redirect;
            match (protocol.as_str(), tls.and_then(|t| t.mode)) {
                ("HTTPS", Some(mode @ (ServerTlsMode::Simple | ServerTlsMode::Mutual))) => {
                    let credential = tls.and_then(|t| t.credential_name.clone().or_else(|| t.credential_names.first().cloned()));
                    let Some(credential) = credential else {
                        errors.push(format!("Gateway {reference}: HTTPS server on {number} needs tls.credentialName"));
                        continue;
                    };
                    match server_tls(shared, &credential, mode == ServerTlsMode::Mutual) {
                        Ok(config) => port.tls.push(ServerTls { hosts: server_hosts, config }),
                        Err(e) => errors.push(format!("Gateway {reference}: {e}")),
                    }
                }
                ("HTTPS", mode) => errors.push(format!(
                    "Gateway {reference}: HTTPS server on {number} has unsupported TLS mode {mode:?} (SIMPLE and MUTUAL are served)"
                )),
                _ => port.plaintext = true,
            }
        }
    }
    for (number, port) in &mut ports {
        let server_hosts = hosts.remove(number).unwrap_or_default();
        port.table = RouteTable::for_gateway(mesh, &port.gateways, &server_hosts, redirect.get(number) == Some(&true))?;
    }
    // Kubernetes Ingress: port 80, and 443 for `spec.tls` entries, as Istio's ingress gateway serves them.
    let ingresses: Vec<_> = mesh
        .of_kind(Kind::Ingress)
        .filter_map(|r| match &r.resource {
            Resource::Ingress(i) => Some(i),
            _ => None,
        })
        .collect();
    if !ingresses.is_empty() {
        let table = RouteTable::for_ingresses(ingresses.iter().copied());
        let http = ports.entry(80).or_default();
        http.plaintext = true;
        http.table.merge(table.clone());
        for ingress in &ingresses {
            for entry in &ingress.spec.tls {
                let Some(secret) = &entry.secret_name else { continue };
                match server_tls(shared, secret, false) {
                    Ok(config) => {
                        let https = ports.entry(443).or_default();
                        let hosts = if entry.hosts.is_empty() { vec!["*".to_owned()] } else { entry.hosts.clone() };
                        https.tls.push(ServerTls { hosts, config });
                    }
                    Err(e) => errors.push(format!("Ingress {}/{}: {e}", ingress.metadata.ns(), ingress.metadata.name)),
                }
            }
        }
        if let Some(https) = ports.get_mut(&443) {
            https.table.merge(table);
        }
    }
    if errors.is_empty() { Ok(ports) } else { Err(ConfigError(errors)) }
}

fn server_tls(shared: &Shared, credential: &str, mutual: bool) -> Result<Arc<rustls::ServerConfig>, String> {
    let source = shared.credential(credential)?;
    let verifier = if mutual {
        if source.current().roots.is_empty() {
            return Err(format!("MUTUAL TLS needs {credential}/ca.crt"));
        }
        Some(ClientVerifier::new(source.clone(), None))
    } else {
        None
    };
    tls::server_config(source, verifier).map_err(|e| e.to_string())
}

fn sidecar_view(
    mesh: &MeshConfig,
    shared: &Shared,
    namespace: &str,
    name: &str,
    app: SocketAddr,
) -> Result<(SidecarView, Vec<ClusterSpec>), ConfigError> {
    let me = mesh
        .workloads()
        .into_iter()
        .find(|w| w.namespace == namespace && w.name == name && w.kind != Kind::Deployment)
        .ok_or_else(|| {
            ConfigError(vec![format!("workload {namespace}/{name} (a Pod or WorkloadEntry) is not in the config")])
        })?;
    if me.address.is_none() {
        return Err(ConfigError(vec![format!(
            "workload {namespace}/{name} has no address (podIP or WorkloadEntry address)"
        )]));
    }
    let mut inbound = BTreeMap::new();
    let mut specs = Vec::new();
    for service in mesh.services().filter(|s| s.metadata.ns() == namespace) {
        if !service.spec.selector.as_ref().is_some_and(|sel| labels_match(sel, &me.labels)) {
            continue;
        }
        let host = meshlens_model::mesh::resolve_host(&service.metadata.name, namespace);
        for port in &service.spec.ports {
            let Some(endpoint) = mesh.endpoints(service, port.port).into_iter().find(|e| e.workload.name == me.name)
            else {
                continue;
            };
            let mode = mesh.peer_authentication_mode(namespace, &me.labels, Some(endpoint.port));
            inbound
                .entry(endpoint.port)
                .or_insert_with(|| (RouteTable::inbound(endpoint.port), mode, Some(host.clone())));
            let port_name = port.name.as_deref().unwrap_or("");
            let http2 = port_name.starts_with("http2") || port_name.starts_with("grpc");
            let cluster = format!("inbound|{}||", endpoint.port);
            if !specs.iter().any(|s: &ClusterSpec| *s.name == *cluster) {
                specs.push(ClusterSpec::static_endpoint(cluster, endpoint.port, app.to_string(), http2));
            }
        }
    }
    if inbound.is_empty() {
        return Err(ConfigError(vec![format!(
            "no Service in {namespace} selects workload {namespace}/{name}: nothing to serve inbound"
        )]));
    }
    let server_tls = match &shared.identity {
        Some(identity) => Some(
            tls::server_config(
                identity.clone(),
                Some(ClientVerifier::new(identity.clone(), Some(shared.trust_domain.clone()))),
            )
            .map_err(|e| ConfigError(vec![e.to_string()]))?,
        ),
        None => None,
    };
    let mut service_names = HashMap::new();
    for service in mesh.services() {
        let (name, ns) = (service.metadata.name.as_str(), service.metadata.ns());
        let fqdn = meshlens_model::mesh::resolve_host(name, ns);
        if ns == namespace {
            service_names.insert(name.to_owned(), fqdn.clone());
        }
        service_names.insert(format!("{name}.{ns}"), fqdn.clone());
        service_names.insert(format!("{name}.{ns}.svc"), fqdn.clone());
        if let Some(ip) = &service.spec.cluster_ip {
            service_names.insert(ip.clone(), fqdn.clone());
        }
        service_names.insert(fqdn.clone(), fqdn);
    }
    let view = SidecarView {
        service_names,
        namespaces: mesh.namespaces(),
        outbound: RouteTable::for_mesh(mesh)?,
        authz: Authorizer::for_workload(mesh, namespace, &me.labels),
        inbound,
        me,
        server_tls,
    };
    Ok((view, specs))
}

impl SidecarView {
    /// The host the application asked for, as the Service FQDN the outbound table is keyed by:
    /// `reviews`, `reviews.default`, `reviews.default.svc` and a Service's cluster IP all name
    /// `reviews.default.svc.cluster.local`; a host no Service has keeps the same rules.
    pub fn service_fqdn<'a>(&'a self, host: &'a str) -> Cow<'a, str> {
        if let Some(fqdn) = self.service_names.get(host) {
            return Cow::Borrowed(fqdn);
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Cow::Borrowed(host);
        }
        let parts: Vec<&str> = host.split('.').collect();
        match parts.as_slice() {
            [name] => Cow::Owned(meshlens_model::mesh::resolve_host(name, &self.me.namespace)),
            [name, ns] if self.namespaces.iter().any(|n| n == ns) => {
                Cow::Owned(meshlens_model::mesh::resolve_host(name, ns))
            }
            [name, ns, "svc"] => Cow::Owned(meshlens_model::mesh::resolve_host(name, ns)),
            _ => Cow::Borrowed(host),
        }
    }
}

/// The snapshot in force; requests clone the `Arc` they start with.
#[derive(Debug, Clone)]
pub struct SharedSnapshot(Arc<RwLock<Arc<Snapshot>>>);

impl SharedSnapshot {
    pub fn new(snapshot: Snapshot) -> SharedSnapshot {
        SharedSnapshot(Arc::new(RwLock::new(Arc::new(snapshot))))
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, snapshot: Snapshot) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }
}

/// The files under `paths` with their modification times and sizes, to notice edits.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    fn walk(path: &Path, out: &mut Vec<(PathBuf, Option<(SystemTime, u64)>)>) {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> =
                std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| e.path()).collect();
            entries.sort();
            for entry in entries {
                walk(&entry, out);
            }
        } else {
            let meta = std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            out.push((path.to_owned(), meta));
        }
    }
    let mut out = Vec::new();
    for path in paths {
        walk(path, &mut out);
    }
    out
}

/// Polls the config files and certificates every `interval`; swaps in a new snapshot when the config
/// changed and compiles, and keeps the old one (with an error log) when it does not.
pub fn spawn_reloader(
    paths: Vec<PathBuf>,
    interval: Duration,
    shared: Arc<Shared>,
    snapshot: SharedSnapshot,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = fingerprint(&paths);
        // tokio's interval rejects a zero period.
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            shared.refresh_certificates();
            let now = fingerprint(&paths);
            if now == seen {
                continue;
            }
            seen = now;
            let previous = snapshot.current();
            let (paths, shared_for_build) = (paths.clone(), shared.clone());
            let built =
                tokio::task::spawn_blocking(move || Snapshot::load(&paths, &shared_for_build, Some(&previous))).await;
            match built {
                Ok(Ok(next)) => {
                    snapshot.replace(next);
                    tracing::info!("mesh config reloaded");
                }
                Ok(Err(err)) => tracing::error!(%err, "new mesh config rejected; keeping the previous one"),
                Err(err) => tracing::error!(%err, "config reload task failed; keeping the previous one"),
            }
        }
    })
}

/// The gateway server TLS config for `sni` (servers are tried in order; a server without hosts or with `*`
/// takes any name).
pub fn pick_server_tls<'a>(servers: &'a [ServerTls], sni: Option<&str>) -> Option<&'a ServerTls> {
    let sni = sni.map(str::to_ascii_lowercase);
    servers
        .iter()
        .find(|s| sni.as_deref().is_some_and(|name| s.hosts.iter().any(|h| host_matches(h, name))))
        .or_else(|| servers.iter().find(|s| s.hosts.is_empty() || s.hosts.iter().any(|h| h == "*")))
}
