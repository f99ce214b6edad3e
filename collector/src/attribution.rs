//! Attribution: which workloads a request record is about.
//!
//! An edge of the service graph needs both ends, but a proxy's log line names the *service* it called and
//! rarely the *workload* it runs in. Two facts fill the gap:
//!
//! 1. **The reporting proxy** ([`ProxyIdentity`]) — known from the transport, not the line: the ALS node id
//!    (`sidecar~IP~POD.NS~NS.svc.cluster.local`), OTLP resource attributes (Envoy's `node_name`,
//!    `k8s.pod.name`, `k8s.namespace.name`, `service.name`), or `--workload NS/NAME` given to
//!    `meshlens import`. An inbound record's proxy is the destination, an outbound record's the source.
//! 2. **The peer, by address** — the client of an inbound record is `downstream_remote_address`, the server
//!    of an outbound one is `upstream_host`; with a [`MeshConfig`] their IPs map to Pods (`status.podIP`) and
//!    WorkloadEntries (`address`).
//!
//! Fields a source already filled first-hand (meshlens' proxy writes its own workload names) are never
//! overwritten; the reporting proxy wins over an address lookup, which wins over the namespace of a SPIFFE
//! principal. docs/formats.md states the same rules for users; keep the two in step.

use meshlens_model::mesh::{Kind, MeshConfig};
use meshlens_model::{Direction, Reporter, RequestRecord, SpiffeId};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

/// The workload whose proxy reported a batch of records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyIdentity {
    /// Workload name (a Deployment's name, not the pod's), when known.
    pub workload: Option<String>,
    pub namespace: Option<String>,
    /// The proxy's own IP.
    pub address: Option<String>,
    /// A gateway (`router~...` node), whose outbound records are reported as `gateway`, not `source`.
    pub gateway: bool,
}

impl ProxyIdentity {
    /// Parses an Envoy node id as Istio writes it: `TYPE~IP~POD.NAMESPACE~DOMAIN`, TYPE `sidecar` or `router`
    /// (gateways). Returns `None` for ids of another shape, which then say nothing about the workload.
    pub fn from_node_id(id: &str) -> Option<Self> {
        let mut parts = id.split('~');
        let (kind, ip, pod, _domain) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !matches!(kind, "sidecar" | "router") {
            return None;
        }
        let (pod, namespace) = pod.split_once('.')?;
        Some(ProxyIdentity {
            workload: non_empty(pod).map(workload_from_pod_name),
            namespace: non_empty(namespace).map(str::to_owned),
            address: ip.parse::<IpAddr>().ok().map(|ip| ip.to_string()),
            gateway: kind == "router",
        })
    }

    /// Parses `NAMESPACE/NAME`, as given to `meshlens import --workload`.
    pub fn from_workload_arg(arg: &str) -> Result<Self, String> {
        match arg.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ProxyIdentity {
                    workload: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                })
            }
            _ => Err(format!("expected NAMESPACE/NAME, found {arg:?}")),
        }
    }

    /// The reporting proxy as OTLP resource attributes describe it: Envoy's OpenTelemetry access logger sets
    /// `node_name` (the node id); SDKs and the Kubernetes attributes processor set `k8s.*` and `service.*`.
    /// `get` looks an attribute up by key.
    pub fn from_resource<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let mut identity = get("node_name").and_then(ProxyIdentity::from_node_id).unwrap_or_default();
        if identity.workload.is_none() {
            identity.workload = get("k8s.deployment.name")
                .map(str::to_owned)
                .or_else(|| get("k8s.pod.name").map(workload_from_pod_name))
                .or_else(|| get("service.name").map(str::to_owned));
        }
        if identity.namespace.is_none() {
            identity.namespace = get("k8s.namespace.name").or_else(|| get("service.namespace")).map(str::to_owned);
        }
        if identity.address.is_none() {
            identity.address = get("k8s.pod.ip").map(str::to_owned);
        }
        (identity != ProxyIdentity::default()).then_some(identity)
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The workload a pod belongs to, from its name: Kubernetes names a Deployment's pods `NAME-HASH-SUFFIX`
/// and other controllers' pods `NAME-SUFFIX`, with HASH and SUFFIX drawn from the alphabet
/// `bcdfghjklmnpqrstvwxz2456789` (no vowels, so that generated names spell no words). Names without such
/// tails (StatefulSet `web-0`, bare pods) are kept whole.
pub fn workload_from_pod_name(pod: &str) -> String {
    fn generated(part: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
        lengths.contains(&part.len()) && part.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
    }
    let parts: Vec<&str> = pod.split('-').collect();
    let keep = match parts.as_slice() {
        [.., hash, suffix] if parts.len() >= 3 && generated(suffix, 5..=5) && generated(hash, 6..=10) => {
            parts.len() - 2
        }
        [.., suffix] if parts.len() >= 2 && generated(suffix, 5..=5) => parts.len() - 1,
        _ => parts.len(),
    };
    parts[..keep].join("-")
}

/// A workload found by address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Peer {
    namespace: String,
    name: String,
}

/// Applies the attribution rules. Build it once per mesh configuration; lookups are hash-map hits.
#[derive(Debug, Clone, Default)]
pub struct Attributor {
    by_address: HashMap<IpAddr, Peer>,
}

impl Attributor {
    /// Indexes the Pods and WorkloadEntries of `mesh` by address (none without a mesh configuration).
    pub fn new(mesh: Option<&MeshConfig>) -> Self {
        let mut by_address = HashMap::new();
        for workload in mesh.map(MeshConfig::workloads).unwrap_or_default() {
            let Some(ip) = workload.address.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let name = match workload.kind {
                Kind::Pod => workload_from_pod_name(&workload.name),
                _ => workload.name,
            };
            by_address.insert(ip, Peer { namespace: workload.namespace, name });
        }
        Attributor { by_address }
    }

    /// Number of addresses known, for start-up logs.
    pub fn known_addresses(&self) -> usize {
        self.by_address.len()
    }

    /// Fills the source and destination workload fields of `record` that are still empty (see the module
    /// docs for the order), and marks records of a gateway proxy as reported by a gateway.
    pub fn attribute(&self, record: &mut RequestRecord, proxy: Option<&ProxyIdentity>) {
        if let Some(proxy) = proxy {
            if proxy.gateway && record.direction != Direction::Inbound {
                record.reporter = Reporter::Gateway;
            }
            let (workload, namespace) = match record.direction {
                Direction::Inbound => (&mut record.destination_workload, &mut record.destination_namespace),
                Direction::Outbound => (&mut record.source_workload, &mut record.source_namespace),
                Direction::Unknown => return self.attribute_peer(record),
            };
            fill(workload, proxy.workload.as_deref());
            fill(namespace, proxy.namespace.as_deref());
        }
        self.attribute_peer(record);
    }

    fn attribute_peer(&self, record: &mut RequestRecord) {
        let peer_address = match record.direction {
            Direction::Inbound => record.downstream_remote_address.as_deref(),
            Direction::Outbound => record.upstream_host.as_deref(),
            Direction::Unknown => None,
        };
        if let Some(peer) = peer_address.and_then(ip_of).and_then(|ip| self.by_address.get(&ip)) {
            let (workload, namespace) = match record.direction {
                Direction::Inbound => (&mut record.source_workload, &mut record.source_namespace),
                _ => (&mut record.destination_workload, &mut record.destination_namespace),
            };
            fill(workload, Some(&peer.name));
            fill(namespace, Some(&peer.namespace));
        }
        if record.source_namespace.is_none()
            && let Some(id) = record.source_principal.as_deref().and_then(|p| p.parse::<SpiffeId>().ok())
        {
            record.source_namespace = Some(id.namespace().to_owned());
        }
    }
}

/// The attribution rules in force, shared by every receiver and replaced whole when the mesh
/// configuration changes (a cluster watch publishes a new snapshot). Receivers take [`current`] once per
/// batch, so one batch is attributed by one configuration.
///
/// [`current`]: SharedAttributor::current
#[derive(Debug, Clone, Default)]
pub struct SharedAttributor(Arc<RwLock<Arc<Attributor>>>);

impl SharedAttributor {
    pub fn new(attributor: Attributor) -> Self {
        SharedAttributor(Arc::new(RwLock::new(Arc::new(attributor))))
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<Attributor> {
        // A poisoned lock only means a writer panicked while swapping an `Arc`, which cannot leave it torn.
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts new rules in force for the batches that start from now on.
    pub fn replace(&self, attributor: Attributor) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(attributor);
    }
}

fn fill(field: &mut Option<String>, value: Option<&str>) {
    if field.is_none() {
        *field = value.map(str::to_owned);
    }
}

/// The IP of `IP:port`, `[v6]:port` or a bare IP; Envoy's `tcp://` prefix (older default format) is ignored.
fn ip_of(address: &str) -> Option<IpAddr> {
    let address = address.strip_prefix("tcp://").unwrap_or(address);
    address.parse::<SocketAddr>().map(|a| a.ip()).or_else(|_| address.parse::<IpAddr>()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::mesh::load::LoadReport;

    #[test]
    fn node_ids_name_pod_namespace_and_address() {
        let id = ProxyIdentity::from_node_id(
            "sidecar~10.244.1.5~productpage-v1-6b746f74dc-9stvs.bookinfo~bookinfo.svc.cluster.local",
        )
        .unwrap();
        assert_eq!(id.workload.as_deref(), Some("productpage-v1"));
        assert_eq!(id.namespace.as_deref(), Some("bookinfo"));
        assert_eq!(id.address.as_deref(), Some("10.244.1.5"));
        assert!(!id.gateway);
        let gw =
            ProxyIdentity::from_node_id("router~10.0.0.9~istio-ingressgateway-5d8b9c7f6-x2x4z.istio-system~x").unwrap();
        assert!(gw.gateway);
        assert_eq!(gw.workload.as_deref(), Some("istio-ingressgateway"));
        assert_eq!(ProxyIdentity::from_node_id("my-envoy"), None);
        assert_eq!(ProxyIdentity::from_node_id("proxy~1.2.3.4~a.b~c"), None);
    }

    #[test]
    fn pod_names_lose_generated_tails_only() {
        assert_eq!(workload_from_pod_name("reviews-v2-7bf8c9648f-4kkx9"), "reviews-v2");
        assert_eq!(workload_from_pod_name("node-exporter-x7k2p"), "node-exporter");
        assert_eq!(workload_from_pod_name("web-0"), "web-0");
        assert_eq!(workload_from_pod_name("my-service-admin"), "my-service-admin");
        assert_eq!(workload_from_pod_name("productpage"), "productpage");
    }

    #[test]
    fn workload_argument_is_namespace_slash_name() {
        let id = ProxyIdentity::from_workload_arg("shop/cart").unwrap();
        assert_eq!((id.namespace.as_deref(), id.workload.as_deref()), (Some("shop"), Some("cart")));
        for bad in ["cart", "/cart", "shop/", "a/b/c"] {
            assert!(ProxyIdentity::from_workload_arg(bad).is_err(), "{bad}");
        }
    }

    const MESH: &str = "
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1-5f9699cfdf-x7k2p, namespace: bookinfo}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.0.0.7}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: legacy-vm, namespace: vms}
spec: {address: 192.168.1.20}
";

    fn attributor() -> Attributor {
        let mut report = LoadReport::default();
        report.parse_str("mesh.yaml", MESH);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        Attributor::new(Some(&MeshConfig::new(report.resources)))
    }

    #[test]
    fn inbound_records_get_the_proxy_as_destination_and_the_client_by_address() {
        let mut record = RequestRecord {
            direction: Direction::Inbound,
            downstream_remote_address: Some("10.0.0.7:51234".into()),
            ..Default::default()
        };
        let proxy = ProxyIdentity::from_workload_arg("bookinfo/reviews-v2").unwrap();
        attributor().attribute(&mut record, Some(&proxy));
        assert_eq!(record.destination_workload.as_deref(), Some("reviews-v2"));
        assert_eq!(record.source_workload.as_deref(), Some("ratings-v1"));
        assert_eq!(record.source_namespace.as_deref(), Some("bookinfo"));
    }

    #[test]
    fn outbound_records_get_the_proxy_as_source_and_the_server_by_address() {
        let mut record = RequestRecord {
            direction: Direction::Outbound,
            reporter: Reporter::Source,
            upstream_host: Some("192.168.1.20:8080".into()),
            ..Default::default()
        };
        let gateway = ProxyIdentity { gateway: true, ..ProxyIdentity::from_workload_arg("istio-system/gw").unwrap() };
        attributor().attribute(&mut record, Some(&gateway));
        assert_eq!(record.reporter, Reporter::Gateway);
        assert_eq!(
            (record.source_namespace.as_deref(), record.source_workload.as_deref()),
            (Some("istio-system"), Some("gw"))
        );
        assert_eq!(record.destination_workload.as_deref(), Some("legacy-vm"));
        assert_eq!(record.destination_namespace.as_deref(), Some("vms"));
    }

    #[test]
    fn first_hand_fields_win_and_principals_name_the_source_namespace() {
        let mut record = RequestRecord {
            direction: Direction::Inbound,
            destination_workload: Some("from-proxy".into()),
            source_principal: Some("spiffe://cluster.local/ns/frontend/sa/web".into()),
            ..Default::default()
        };
        let proxy = ProxyIdentity::from_workload_arg("bookinfo/reviews").unwrap();
        Attributor::default().attribute(&mut record, Some(&proxy));
        assert_eq!(record.destination_workload.as_deref(), Some("from-proxy"));
        assert_eq!(record.source_namespace.as_deref(), Some("frontend"));
    }
}
