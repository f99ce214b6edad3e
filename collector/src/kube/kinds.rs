//! The kinds `meshlens serve --kube` watches: the single list that the watcher, the RBAC rules in
//! `deploy/base/rbac.yaml` (checked by `tests/deploy_manifests.rs`) and docs/kubernetes.md agree on.

/// One watched kind and where the API server serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedKind {
    pub kind: &'static str,
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Versions to try, preferred first: Istio serves `v1` since 1.22 and `v1beta1` before.
    pub versions: &'static [&'static str],
    /// The resource name in URLs and RBAC rules.
    pub plural: &'static str,
    pub namespaced: bool,
    /// Defined by a CustomResourceDefinition (Istio's): a cluster without it is reported and skipped.
    pub custom: bool,
}

impl WatchedKind {
    /// `apiVersion` for `version`: `v1` in the core group, `group/version` elsewhere.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_owned() } else { format!("{}/{version}", self.group) }
    }
}

const fn core(
    kind: &'static str,
    group: &'static str,
    version: &'static [&'static str],
    plural: &'static str,
) -> WatchedKind {
    WatchedKind { kind, group, versions: version, plural, namespaced: true, custom: false }
}

const fn istio(kind: &'static str, group: &'static str, plural: &'static str) -> WatchedKind {
    WatchedKind { kind, group, versions: &["v1", "v1beta1"], plural, namespaced: true, custom: true }
}

/// Every kind the watcher lists and watches, cluster-wide.
pub const WATCHED_KINDS: &[WatchedKind] = &[
    WatchedKind {
        kind: "Namespace",
        group: "",
        versions: &["v1"],
        plural: "namespaces",
        namespaced: false,
        custom: false,
    },
    core("Service", "", &["v1"], "services"),
    core("Pod", "", &["v1"], "pods"),
    core("EndpointSlice", "discovery.k8s.io", &["v1"], "endpointslices"),
    core("Ingress", "networking.k8s.io", &["v1"], "ingresses"),
    istio("Gateway", "networking.istio.io", "gateways"),
    istio("VirtualService", "networking.istio.io", "virtualservices"),
    istio("DestinationRule", "networking.istio.io", "destinationrules"),
    istio("ServiceEntry", "networking.istio.io", "serviceentries"),
    istio("WorkloadEntry", "networking.istio.io", "workloadentries"),
    istio("Sidecar", "networking.istio.io", "sidecars"),
    istio("PeerAuthentication", "security.istio.io", "peerauthentications"),
    istio("AuthorizationPolicy", "security.istio.io", "authorizationpolicies"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::mesh::Kind;

    #[test]
    fn every_kind_but_endpoint_slices_is_one_the_model_loads() {
        for watched in WATCHED_KINDS {
            let api_version = watched.api_version(watched.versions[0]);
            let model = Kind::from_type(&api_version, watched.kind);
            if watched.kind == "EndpointSlice" {
                assert_eq!(model, None);
            } else {
                let model = model.unwrap_or_else(|| panic!("{api_version} {} is not a model kind", watched.kind));
                assert_eq!(model.is_namespaced(), watched.namespaced, "{}", watched.kind);
            }
        }
    }

    #[test]
    fn api_versions_name_the_group_except_in_the_core_group() {
        assert_eq!(WATCHED_KINDS[0].api_version("v1"), "v1");
        assert_eq!(WATCHED_KINDS[3].api_version("v1"), "discovery.k8s.io/v1");
    }
}
