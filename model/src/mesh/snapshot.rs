//! [`MeshConfig`]: an indexed, immutable snapshot of loaded resources with Istio's resolution rules.

use super::k8s::{Pod, Service};
use super::meta::labels_match;
use super::networking::{DestinationRule, VirtualService};
use super::security::{MtlsMode, PeerAuthentication};
use super::{Kind, LoadedResource, Resource, resource_ref};
use std::collections::{BTreeMap, HashMap};

/// Istio's default cluster DNS domain.
pub const DEFAULT_DOMAIN: &str = "cluster.local";
/// Istio's default root namespace: mesh-wide policies live here.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Resolves a host as Istio does: a short name (no dots) is relative to `namespace`
/// (`reviews` -> `reviews.default.svc.cluster.local`); names with dots and wildcards are taken as given.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{DEFAULT_DOMAIN}")
    }
}

/// Whether `pattern` (possibly a wildcard like `*` or `*.example.com`) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len() || suffix.is_empty(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// A workload: something with labels and a service account that a sidecar could run in.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Pod IP or WorkloadEntry address, when the config says.
    pub address: Option<String>,
}

impl WorkloadRef {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the workload runs an Istio sidecar (`security.istio.io/tlsMode: istio`, as Istio's auto
    /// mTLS decides it).
    pub fn has_sidecar(&self) -> bool {
        self.labels.get("security.istio.io/tlsMode").is_some_and(|m| m == "istio")
    }
}

/// A concrete address backing a service port.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub workload: WorkloadRef,
    pub address: String,
    /// The port on the workload that the service port targets.
    pub port: u16,
}

/// An indexed snapshot of mesh configuration.
#[derive(Debug, Clone, Default)]
pub struct MeshConfig {
    resources: Vec<LoadedResource>,
    by_key: HashMap<(Kind, String, String), usize>,
    by_kind: BTreeMap<Kind, Vec<usize>>,
    root_namespace: String,
}

impl MeshConfig {
    /// Indexes `resources`. A later duplicate of the same `Kind namespace/name` replaces an earlier one,
    /// as `kubectl apply` of both files would.
    pub fn new(resources: Vec<LoadedResource>) -> Self {
        let mut config = MeshConfig { root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(), ..Default::default() };
        for loaded in resources {
            let meta = loaded.resource.metadata();
            let key = (loaded.resource.kind(), meta.ns().to_owned(), meta.name.clone());
            match config.by_key.get(&key) {
                Some(&index) => config.resources[index] = loaded,
                None => {
                    config.by_key.insert(key, config.resources.len());
                    config.resources.push(loaded);
                }
            }
        }
        for (index, loaded) in config.resources.iter().enumerate() {
            config.by_kind.entry(loaded.resource.kind()).or_default().push(index);
        }
        config
    }

    /// Sets the mesh root namespace (Istio's `rootNamespace`, default `istio-system`).
    pub fn with_root_namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.root_namespace);
        self
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    pub fn resources(&self) -> &[LoadedResource] {
        &self.resources
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&LoadedResource> {
        self.by_key.get(&(kind, namespace.to_owned(), name.to_owned())).map(|&i| &self.resources[i])
    }

    /// All loaded resources of one kind, in load order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &LoadedResource> {
        self.by_kind.get(&kind).into_iter().flatten().map(|&i| &self.resources[i])
    }

    /// Namespaces mentioned anywhere (declared or used by a namespaced object).
    pub fn namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self
            .resources
            .iter()
            .map(|r| match &r.resource {
                Resource::Namespace(ns) => ns.metadata.name.clone(),
                other => other.metadata().ns().to_owned(),
            })
            .collect();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.of_kind(Kind::Service).filter_map(|r| match &r.resource {
            Resource::Service(s) => Some(s),
            _ => None,
        })
    }

    pub fn virtual_services(&self) -> impl Iterator<Item = &VirtualService> {
        self.of_kind(Kind::VirtualService).filter_map(|r| match &r.resource {
            Resource::VirtualService(v) => Some(v),
            _ => None,
        })
    }

    pub fn destination_rules(&self) -> impl Iterator<Item = &DestinationRule> {
        self.of_kind(Kind::DestinationRule).filter_map(|r| match &r.resource {
            Resource::DestinationRule(d) => Some(d),
            _ => None,
        })
    }

    fn peer_authentications(&self) -> impl Iterator<Item = &PeerAuthentication> {
        self.of_kind(Kind::PeerAuthentication).filter_map(|r| match &r.resource {
            Resource::PeerAuthentication(p) => Some(p),
            _ => None,
        })
    }

    /// The Kubernetes Service named by `fqdn` (`name.namespace.svc.cluster.local`).
    pub fn service_by_host(&self, fqdn: &str) -> Option<&Service> {
        let (name, namespace) = crate::names::service_fqdn_parts(fqdn)?;
        match &self.get(Kind::Service, namespace, name)?.resource {
            Resource::Service(s) => Some(s),
            _ => None,
        }
    }

    /// Whether a host is known to the mesh: a Service FQDN or a ServiceEntry host (wildcards honoured).
    pub fn host_exists(&self, fqdn: &str) -> bool {
        self.service_by_host(fqdn).is_some()
            || self.of_kind(Kind::ServiceEntry).any(|r| match &r.resource {
                Resource::ServiceEntry(se) => se.spec.hosts.iter().any(|h| host_matches(h, fqdn)),
                _ => false,
            })
    }

    /// Pods, Deployments (as their pod template) and WorkloadEntries.
    pub fn workloads(&self) -> Vec<WorkloadRef> {
        let mut workloads = Vec::new();
        for loaded in &self.resources {
            let meta = loaded.resource.metadata();
            let workload = match &loaded.resource {
                Resource::Pod(pod) => pod_workload(pod),
                Resource::Deployment(d) => WorkloadRef {
                    kind: Kind::Deployment,
                    namespace: meta.ns().to_owned(),
                    name: meta.name.clone(),
                    labels: d.spec.template.metadata.labels.clone(),
                    service_account: d.spec.template.spec.service_account().to_owned(),
                    address: None,
                },
                Resource::WorkloadEntry(we) => WorkloadRef {
                    kind: Kind::WorkloadEntry,
                    namespace: meta.ns().to_owned(),
                    name: meta.name.clone(),
                    labels: we.spec.labels.clone(),
                    service_account: we.spec.service_account.clone().unwrap_or_else(|| "default".into()),
                    address: we.spec.address.clone(),
                },
                _ => continue,
            };
            workloads.push(workload);
        }
        workloads
    }

    /// The workload that owns an IP address (Pod `status.podIP` or WorkloadEntry `address`).
    pub fn workload_by_address(&self, ip: &str) -> Option<WorkloadRef> {
        self.workloads().into_iter().find(|w| w.address.as_deref() == Some(ip))
    }

    /// Endpoints of `service` for `port` (the service port), from Pods and WorkloadEntries its selector
    /// matches in its namespace. Services without a selector have no endpoints here.
    pub fn endpoints(&self, service: &Service, port: u16) -> Vec<Endpoint> {
        let Some(selector) = &service.spec.selector else { return Vec::new() };
        let Some(service_port) = service.spec.ports.iter().find(|p| p.port == port) else { return Vec::new() };
        let namespace = service.metadata.ns();
        self.workloads()
            .into_iter()
            .filter(|w| w.kind != Kind::Deployment && w.namespace == namespace && labels_match(selector, &w.labels))
            .filter_map(|workload| {
                let address = workload.address.clone()?;
                let target = self.target_port(&workload, service_port);
                Some(Endpoint { workload, address, port: target })
            })
            .collect()
    }

    /// Resolves a service port's `targetPort` on a workload: a number, or a named port (WorkloadEntry
    /// `ports` or a Pod container port name); defaults to the service port.
    fn target_port(&self, workload: &WorkloadRef, service_port: &super::k8s::ServicePort) -> u16 {
        use super::meta::IntOrString;
        if workload.kind == Kind::WorkloadEntry
            && let Some(Resource::WorkloadEntry(we)) =
                self.get(Kind::WorkloadEntry, &workload.namespace, &workload.name).map(|r| &r.resource)
            && let Some(name) = &service_port.name
            && let Some(&port) = we.spec.ports.get(name)
        {
            return u16::try_from(port).unwrap_or(service_port.port);
        }
        match &service_port.target_port {
            Some(IntOrString::Int(n)) => u16::try_from(*n).unwrap_or(service_port.port),
            Some(IntOrString::String(name)) => self
                .get(Kind::Pod, &workload.namespace, &workload.name)
                .and_then(|r| match &r.resource {
                    Resource::Pod(pod) => pod
                        .spec
                        .containers
                        .iter()
                        .flat_map(|c| &c.ports)
                        .find(|p| p.name.as_deref() == Some(name.as_str()))
                        .map(|p| p.container_port),
                    _ => None,
                })
                .unwrap_or(service_port.port),
            None => service_port.port,
        }
    }

    /// VirtualServices that route `fqdn` for `gateway` (`mesh` for sidecars, or `namespace/name` of a
    /// Gateway), in load order. A VirtualService with no `gateways` applies to `mesh` only.
    pub fn virtual_services_for(&self, fqdn: &str, gateway: &str) -> Vec<&VirtualService> {
        self.virtual_services()
            .filter(|vs| {
                let ns = vs.metadata.ns();
                let gateways_ok = if vs.spec.gateways.is_empty() {
                    gateway == "mesh"
                } else {
                    vs.spec.gateways.iter().any(|g| resolve_gateway_ref(g, ns) == gateway)
                };
                gateways_ok && vs.spec.hosts.iter().any(|h| host_matches(&resolve_host(h, ns), fqdn))
            })
            .collect()
    }

    /// The DestinationRule that applies to traffic from `client_namespace` to `fqdn`: Istio looks in the
    /// client's namespace, then the service's namespace, then the root namespace; within one namespace
    /// the most specific host wins (exact over wildcard, longer wildcard over shorter).
    pub fn destination_rule_for(&self, fqdn: &str, client_namespace: &str) -> Option<&DestinationRule> {
        let service_namespace = crate::names::service_fqdn_parts(fqdn).map(|(_, ns)| ns);
        let lookup_order = [Some(client_namespace), service_namespace, Some(self.root_namespace.as_str())];
        lookup_order.into_iter().flatten().find_map(|namespace| {
            self.destination_rules()
                .filter(|dr| dr.metadata.ns() == namespace && dr.spec.workload_selector.is_none())
                .filter(|dr| host_matches(&resolve_host(&dr.spec.host, namespace), fqdn))
                .max_by_key(|dr| host_specificity(&resolve_host(&dr.spec.host, namespace)))
        })
    }

    /// The effective PeerAuthentication mode for a workload on a port: a workload-selector policy in its
    /// namespace, then the namespace-wide policy, then the mesh-wide one in the root namespace; `UNSET`
    /// inherits from the next level; the default is PERMISSIVE. Port-level settings override.
    pub fn peer_authentication_mode(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        port: Option<u16>,
    ) -> MtlsMode {
        let workload_policy = self.peer_authentications().find(|pa| {
            pa.metadata.ns() == namespace
                && pa
                    .spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| !s.match_labels.is_empty() && labels_match(&s.match_labels, labels))
        });
        let namespace_policy = self.peer_authentications().find(|pa| {
            pa.metadata.ns() == namespace && pa.spec.selector.as_ref().is_none_or(|s| s.match_labels.is_empty())
        });
        let mesh_policy = self.peer_authentications().find(|pa| {
            pa.metadata.ns() == self.root_namespace
                && pa.spec.selector.as_ref().is_none_or(|s| s.match_labels.is_empty())
        });
        let mode_of = |pa: &PeerAuthentication| {
            let port_mode = port.and_then(|p| pa.spec.port_level_mtls.get(&p)).map(|m| m.mode);
            match port_mode {
                Some(mode) if mode != MtlsMode::Unset => mode,
                _ => pa.spec.mtls.as_ref().map_or(MtlsMode::Unset, |m| m.mode),
            }
        };
        [workload_policy, namespace_policy, mesh_policy]
            .into_iter()
            .flatten()
            .map(mode_of)
            .find(|mode| *mode != MtlsMode::Unset)
            .unwrap_or(MtlsMode::Permissive)
    }

    /// `Kind namespace/name` of a resource as its document wrote it.
    pub fn reference(&self, loaded: &LoadedResource) -> String {
        resource_ref(loaded.resource.kind(), loaded.resource.metadata())
    }
}

fn pod_workload(pod: &Pod) -> WorkloadRef {
    WorkloadRef {
        kind: Kind::Pod,
        namespace: pod.metadata.ns().to_owned(),
        name: pod.metadata.name.clone(),
        labels: pod.metadata.labels.clone(),
        service_account: pod.spec.service_account().to_owned(),
        address: pod.status.pod_ip.clone(),
    }
}

/// `gateway` or `namespace/gateway` as written in a VirtualService, made `namespace/name`
/// (`mesh` stays `mesh`).
pub fn resolve_gateway_ref(gateway: &str, vs_namespace: &str) -> String {
    if gateway == "mesh" || gateway.contains('/') {
        gateway.to_owned()
    } else if let Some((name, rest)) = gateway.split_once('.') {
        // The deprecated `name.namespace` (or FQDN) form.
        let namespace = rest.split('.').next().unwrap_or(rest);
        format!("{namespace}/{name}")
    } else {
        format!("{vs_namespace}/{gateway}")
    }
}

fn host_specificity(host: &str) -> (bool, usize) {
    (!host.starts_with('*'), host.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::LoadReport;

    fn config(yaml: &str) -> MeshConfig {
        let mut report = LoadReport::default();
        report.parse_str("t.yaml", yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        MeshConfig::new(report.resources)
    }

    #[test]
    fn resolves_short_names_and_wildcards() {
        assert_eq!(resolve_host("reviews", "default"), "reviews.default.svc.cluster.local");
        assert_eq!(resolve_host("reviews.prod.svc.cluster.local", "default"), "reviews.prod.svc.cluster.local");
        assert_eq!(resolve_host("*.example.com", "default"), "*.example.com");
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("*", "anything.svc"));
        assert!(host_matches("Reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local"));
    }

    #[test]
    fn gateway_refs_resolve_to_namespace_and_name() {
        assert_eq!(resolve_gateway_ref("bookinfo-gateway", "default"), "default/bookinfo-gateway");
        assert_eq!(resolve_gateway_ref("istio-system/gw", "default"), "istio-system/gw");
        assert_eq!(resolve_gateway_ref("mesh", "default"), "mesh");
        assert_eq!(resolve_gateway_ref("gw.istio-system.svc.cluster.local", "default"), "istio-system/gw");
    }

    const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9081}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}, serviceAccount: bookinfo-reviews}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-abc, namespace: default, labels: {app: reviews, version: v2}}
spec: {serviceAccountName: bookinfo-reviews}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: other, labels: {app: reviews}}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: istio-system}
spec: {host: "*.local"}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: legacy, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}, portLevelMtls: {8080: {mode: DISABLE}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: inherit, namespace: legacy}
spec: {selector: {matchLabels: {app: x}}, mtls: {mode: UNSET}}
"#;

    #[test]
    fn endpoints_come_from_selected_pods_and_workload_entries_in_the_namespace() {
        let mesh = config(MESH);
        let service = mesh.service_by_host("reviews.default.svc.cluster.local").unwrap();
        let endpoints = mesh.endpoints(service, 9080);
        let addresses: Vec<(&str, u16, bool)> =
            endpoints.iter().map(|e| (e.address.as_str(), e.port, e.workload.has_sidecar())).collect();
        assert_eq!(addresses, [("10.0.0.1", 9081, true), ("10.0.0.2", 9081, false)]);
        assert!(mesh.endpoints(service, 1234).is_empty());
        assert_eq!(mesh.workload_by_address("10.0.0.2").unwrap().id(), "default/reviews-v2-abc");
    }

    #[test]
    fn destination_rule_lookup_prefers_service_namespace_over_root() {
        let mesh = config(MESH);
        let dr = mesh.destination_rule_for("reviews.default.svc.cluster.local", "frontend").unwrap();
        assert_eq!(dr.metadata.name, "reviews");
        let dr = mesh.destination_rule_for("ratings.other.svc.cluster.local", "frontend").unwrap();
        assert_eq!(dr.metadata.name, "all");
    }

    #[test]
    fn virtual_services_apply_to_mesh_by_default() {
        let mesh = config(MESH);
        assert_eq!(mesh.virtual_services_for("reviews.default.svc.cluster.local", "mesh").len(), 1);
        assert!(mesh.virtual_services_for("reviews.default.svc.cluster.local", "default/gw").is_empty());
    }

    #[test]
    fn peer_authentication_inherits_and_overrides_by_port() {
        let mesh = config(MESH);
        let labels = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
        assert_eq!(mesh.peer_authentication_mode("default", &labels, None), MtlsMode::Strict);
        assert_eq!(mesh.peer_authentication_mode("legacy", &labels, Some(9080)), MtlsMode::Permissive);
        assert_eq!(mesh.peer_authentication_mode("legacy", &labels, Some(8080)), MtlsMode::Disable);
        assert_eq!(MeshConfig::default().peer_authentication_mode("x", &labels, None), MtlsMode::Permissive);
    }

    #[test]
    fn later_duplicates_replace_earlier_ones() {
        let mesh = config(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 2}]}\n",
        );
        let services: Vec<u16> = mesh.services().map(|s| s.spec.ports[0].port).collect();
        assert_eq!(services, [2]);
    }
}
