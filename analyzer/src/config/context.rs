//! [`Context`]: the indexed configuration every check reads, with the lookups istioctl's analyzers share
//! (workloads and whether they run a sidecar, the service registry scoped by `exportTo`).

use super::codes::Code;
use crate::Finding;
use meshlens_model::mesh::k8s::{Container, Namespace, Service};
use meshlens_model::mesh::networking::ServiceEntry;
use meshlens_model::mesh::{Kind, LoadedResource, MeshConfig, Resource, SkippedDocument};
use std::collections::BTreeMap;

/// The cluster DNS suffix istioctl assumes for Kubernetes service hosts.
pub const SERVICE_SUFFIX: &str = ".svc.cluster.local";
/// `exportTo` value meaning every namespace.
pub const EXPORT_ALL: &str = "*";
/// `exportTo` value meaning the resource's own namespace.
pub const EXPORT_LOCAL: &str = ".";

pub type Labels = BTreeMap<String, String>;

/// A Pod, a Deployment's pod template, or a WorkloadEntry: something a selector can pick.
#[derive(Debug)]
pub struct Workload<'a> {
    pub loaded: &'a LoadedResource,
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a Labels,
    pub annotations: &'a Labels,
    /// Node the Pod runs on (Pods only), for the topology labels Istio adds to endpoints.
    pub node_name: Option<&'a str>,
    /// Whether the workload runs an Istio sidecar, as istioctl decides it from the manifest.
    pub in_mesh: bool,
}

impl Workload<'_> {
    /// Ambient workloads are marked by the CNI with this annotation.
    pub fn in_ambient_mode(&self) -> bool {
        self.annotations.get("ambient.istio.io/redirection").is_some_and(|v| v == "enabled")
    }
}

/// What backs a host of the service registry.
#[derive(Debug, Clone)]
pub enum Backing<'a> {
    Service(&'a Service),
    ServiceEntry(&'a ServiceEntry),
}

/// A host as istioctl's analyzers see it: Kubernetes Services are turned into ServiceEntries.
#[derive(Debug, Clone)]
pub struct HostEntry<'a> {
    pub ports: Vec<u32>,
    pub backing: Backing<'a>,
}

/// Everything a check needs: the resources, indexed (the mesh settings are applied to the [`MeshConfig`]).
#[derive(Debug)]
pub struct Context<'a> {
    pub mesh: &'a MeshConfig,
    /// Documents of kinds meshlens does not model (e.g. Gateway API `Gateway`s a VirtualService may name).
    pub skipped: &'a [SkippedDocument],
    /// Resources meshlens added itself (istioctl's default ingress gateway); never reported on.
    synthetic_file: &'a str,
    /// `(scope, fqdn)`: scope is a namespace or `*`; later definitions replace earlier ones, Services last.
    registry: BTreeMap<(String, String), HostEntry<'a>>,
    workloads: Vec<Workload<'a>>,
}

macro_rules! typed_iter {
    ($($method:ident: $variant:ident => $ty:ty;)*) => {
        $(
            pub fn $method(&self) -> impl Iterator<Item = (&'a LoadedResource, &'a $ty)> + use<'a> {
                self.mesh.of_kind(Kind::$variant).filter_map(|r| match &r.resource {
                    Resource::$variant(o) => Some((r, o)),
                    _ => None,
                })
            }
        )*
    };
}

impl<'a> Context<'a> {
    pub fn new(mesh: &'a MeshConfig, skipped: &'a [SkippedDocument], synthetic_file: &'a str) -> Self {
        let mut cx = Context { mesh, skipped, synthetic_file, registry: BTreeMap::new(), workloads: Vec::new() };
        cx.registry = cx.host_registry();
        cx.workloads = cx.collect_workloads();
        cx
    }

    typed_iter! {
        namespaces: Namespace => Namespace;
        services: Service => Service;
        secrets: Secret => meshlens_model::mesh::k8s::Secret;
        gateways: Gateway => meshlens_model::mesh::networking::Gateway;
        virtual_services: VirtualService => meshlens_model::mesh::networking::VirtualService;
        destination_rules: DestinationRule => meshlens_model::mesh::networking::DestinationRule;
        service_entries: ServiceEntry => ServiceEntry;
        sidecars: Sidecar => meshlens_model::mesh::networking::Sidecar;
        peer_authentications: PeerAuthentication => meshlens_model::mesh::security::PeerAuthentication;
        authorization_policies: AuthorizationPolicy => meshlens_model::mesh::security::AuthorizationPolicy;
    }

    /// Whether meshlens made this resource up (it is then never the subject of a finding).
    pub fn is_synthetic(&self, loaded: &LoadedResource) -> bool {
        loaded.origin.file == self.synthetic_file
    }

    pub fn namespace(&self, name: &str) -> Option<&'a Namespace> {
        self.namespaces().map(|(_, ns)| ns).find(|ns| ns.metadata.name == name)
    }

    /// Pods, Deployment pod templates and WorkloadEntries, in load order.
    pub fn workloads(&self) -> &[Workload<'a>] {
        &self.workloads
    }

    fn collect_workloads(&self) -> Vec<Workload<'a>> {
        let mut workloads = Vec::new();
        for loaded in self.mesh.resources() {
            let meta = loaded.resource.metadata();
            let (labels, annotations, containers, node_name): (_, _, &[Container], _) = match &loaded.resource {
                Resource::Pod(pod) => {
                    (&meta.labels, &meta.annotations, &pod.spec.containers, pod.spec.node_name.as_deref())
                }
                Resource::Deployment(d) => {
                    let template = &d.spec.template;
                    (&template.metadata.labels, &template.metadata.annotations, &template.spec.containers, None)
                }
                Resource::WorkloadEntry(we) => (&we.spec.labels, &meta.annotations, &[], None),
                _ => continue,
            };
            let namespace = meta.ns();
            let in_mesh = match loaded.resource.kind() {
                // A WorkloadEntry exists only to put a VM or external workload in the mesh.
                Kind::WorkloadEntry => true,
                _ => self.runs_sidecar(namespace, labels, annotations, containers),
            };
            workloads.push(Workload {
                loaded,
                kind: loaded.resource.kind(),
                namespace,
                name: &meta.name,
                labels,
                annotations,
                node_name,
                in_mesh,
            });
        }
        workloads
    }

    /// istioctl's rule: an `istio-proxy` container with an image, else the `sidecar.istio.io/inject`
    /// label, then annotation, then the namespace's `istio-injection` label.
    fn runs_sidecar(&self, namespace: &str, labels: &Labels, annotations: &Labels, containers: &[Container]) -> bool {
        const INJECT: &str = "sidecar.istio.io/inject";
        if containers.iter().any(|c| c.name == "istio-proxy" && c.image.as_deref().is_some_and(|i| !i.is_empty())) {
            return true;
        }
        if let Some(value) = labels.get(INJECT).or_else(|| annotations.get(INJECT)) {
            return value == "true";
        }
        self.namespace(namespace)
            .is_some_and(|ns| ns.metadata.labels.get("istio-injection").is_some_and(|v| v == "enabled"))
    }

    /// The registry istioctl's destination checks use: ServiceEntry hosts per `exportTo` scope, then
    /// Services (as ServiceEntries) per their `networking.istio.io/exportTo` annotation.
    fn host_registry(&self) -> BTreeMap<(String, String), HostEntry<'a>> {
        let mut registry = BTreeMap::new();
        for (_, se) in self.service_entries() {
            let namespace = se.metadata.ns();
            let entry = HostEntry {
                ports: se.spec.ports.iter().map(|p| p.number).collect(),
                backing: Backing::ServiceEntry(se),
            };
            for host in &se.spec.hosts {
                for scope in export_scopes(&se.spec.export_to, namespace) {
                    registry.insert((scope, to_fqdn(host, namespace)), entry.clone());
                }
            }
        }
        for (_, svc) in self.services() {
            let namespace = svc.metadata.ns();
            let entry = HostEntry {
                ports: svc.spec.ports.iter().map(|p| u32::from(p.port)).collect(),
                backing: Backing::Service(svc),
            };
            let fqdn = to_fqdn(&svc.metadata.name, namespace);
            for scope in annotation_scopes(svc.metadata.annotations.get("networking.istio.io/exportTo"), namespace) {
                registry.insert((scope, fqdn.clone()), entry.clone());
            }
        }
        registry
    }

    /// The service a destination `host` names, as seen from `namespace` by a resource exported to
    /// `export_to` (istioctl's `GetDestinationHost`): exact hosts visible everywhere, then in the
    /// resource's scopes, then wildcard ServiceEntry hosts.
    pub fn destination_host(&self, namespace: &str, export_to: &[String], host: &str) -> Option<&HostEntry<'a>> {
        let fqdn = to_fqdn(host, namespace);
        let lookup = |scope: &str| self.registry.get(&(scope.to_owned(), fqdn.clone()));
        if let Some(entry) = lookup(EXPORT_ALL) {
            return Some(entry);
        }
        let found = if export_to.is_empty() {
            lookup(namespace)
        } else {
            export_to.iter().find_map(|e| lookup(if e == EXPORT_LOCAL { namespace } else { e }))
        };
        if found.is_some() {
            return found;
        }
        let host_suffix = host.strip_prefix('*').unwrap_or(host);
        self.registry.iter().find_map(|((scope, entry_host), entry)| {
            let suffix = entry_host.strip_prefix('*')?;
            let visible = scope == EXPORT_ALL || scope == namespace;
            (visible && host_suffix.ends_with(suffix)).then_some(entry)
        })
    }

    /// Reports a finding about `loaded` with the code's level and generic fix, unless meshlens made
    /// `loaded` up.
    pub fn report(&self, out: &mut Vec<Finding>, code: &Code, loaded: &LoadedResource, message: String) {
        self.report_with_fix(out, code, loaded, message, code.fix.to_owned());
    }

    /// As [`Context::report`], with a fix hint specific to this finding.
    pub fn report_with_fix(
        &self,
        out: &mut Vec<Finding>,
        code: &Code,
        loaded: &LoadedResource,
        message: String,
        fix: String,
    ) {
        if self.is_synthetic(loaded) {
            return;
        }
        out.push(Finding {
            code: code.code.to_owned(),
            level: code.level,
            resource: self.mesh.reference(loaded),
            message,
            origin: Some(format!("{}:{}", loaded.origin.file, loaded.origin.line)),
            fix: Some(fix),
        });
    }
}

/// Scopes a ServiceEntry (or VirtualService) host is visible in: `*` when exported everywhere (or
/// `exportTo` is empty), else each listed namespace with `.` meaning its own.
pub fn export_scopes(export_to: &[String], namespace: &str) -> Vec<String> {
    if export_to.is_empty() || export_to.iter().any(|e| e == EXPORT_ALL) {
        return vec![EXPORT_ALL.to_owned()];
    }
    let mut scopes: Vec<String> =
        export_to.iter().map(|e| if e == EXPORT_LOCAL { namespace.to_owned() } else { e.clone() }).collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// Scopes from a Service's `networking.istio.io/exportTo` annotation (comma-separated).
fn annotation_scopes(annotation: Option<&String>, namespace: &str) -> Vec<String> {
    match annotation.map(|a| a.trim()).filter(|a| !a.is_empty()) {
        None => vec![EXPORT_ALL.to_owned()],
        Some(list) => {
            let entries: Vec<String> = list.split(',').map(|e| e.trim().to_owned()).collect();
            export_scopes(&entries, namespace)
        }
    }
}

/// istioctl's `ConvertHostToFQDN`: a short name (no dot, no wildcard) is a Service in `namespace`.
pub fn to_fqdn(host: &str, namespace: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}{SERVICE_SUFFIX}")
    }
}

/// `(namespace, name)` of the Service a host names (istioctl's `GetResourceNameFromHost`): an FQDN
/// `name.namespace.svc.cluster.local`, else `host` itself in `namespace`.
pub fn service_name_of_host(host: &str, namespace: &str) -> (String, String) {
    host.strip_suffix(SERVICE_SUFFIX)
        .and_then(|rest| rest.rsplit_once('.'))
        .filter(|(name, ns)| !name.is_empty() && !ns.is_empty())
        .map_or_else(|| (namespace.to_owned(), host.to_owned()), |(name, ns)| (ns.to_owned(), name.to_owned()))
}

/// Istio's host overlap (`host.Name.Matches`): equal names, or a wildcard covering the other (either way).
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a_suffix), Some(b_suffix)) => {
            if a.len() < b.len() {
                b_suffix.ends_with(a_suffix)
            } else {
                a_suffix.ends_with(b_suffix)
            }
        }
        (Some(a_suffix), None) => b.ends_with(a_suffix),
        (None, Some(b_suffix)) => a.ends_with(b_suffix),
        (None, None) => a == b,
    }
}

/// `namespace/name`, or just `name` when the document gave no namespace (istioctl's `FullName`).
pub fn full_name(meta: &meshlens_model::mesh::ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name),
        None => meta.name.clone(),
    }
}

/// A label selector as Kubernetes prints it: `k1=v1,k2=v2`.
pub fn selector_string(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A list as Go's `%v` prints it: `[a b c]`.
pub fn go_list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_overlap_either_way_like_istio() {
        assert!(hosts_overlap("*.example.com", "api.example.com"));
        assert!(hosts_overlap("api.example.com", "*.example.com"));
        assert!(hosts_overlap("*", "*.example.com"));
        assert!(hosts_overlap("*.a.example.com", "*.example.com"));
        assert!(!hosts_overlap("*.example.com", "example.com"));
        assert!(!hosts_overlap("a.example.com", "b.example.com"));
    }

    #[test]
    fn hosts_name_services_as_istioctl_reads_them() {
        assert_eq!(to_fqdn("reviews", "shop"), "reviews.shop.svc.cluster.local");
        assert_eq!(to_fqdn("reviews.other", "shop"), "reviews.other");
        let name = |host: &str| service_name_of_host(host, "shop");
        assert_eq!(name("reviews.prod.svc.cluster.local"), ("prod".to_owned(), "reviews".to_owned()));
        assert_eq!(name("reviews"), ("shop".to_owned(), "reviews".to_owned()));
        assert_eq!(name(".svc.cluster.local"), ("shop".to_owned(), ".svc.cluster.local".to_owned()));
    }

    #[test]
    fn export_scopes_resolve_dot_and_star() {
        let scopes = |list: &[&str]| export_scopes(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), "shop");
        assert_eq!(scopes(&[]), ["*"]);
        assert_eq!(scopes(&[".", "web", "*"]), ["*"]);
        assert_eq!(scopes(&[".", "web", "shop"]), ["shop", "web"]);
        assert_eq!(annotation_scopes(Some(&"a, .".to_owned()), "shop"), ["a", "shop"]);
        assert_eq!(annotation_scopes(Some(&" ".to_owned()), "shop"), ["*"]);
    }
}
