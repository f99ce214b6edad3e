//! AuthorizationPolicy checks (istioctl's `authz.AuthorizationPoliciesAnalyzer`): policies that select no
//! workload, and source namespaces that do not exist.

use super::codes::{IST0101, IST0127};
use super::context::{Context, Labels, selector_string};
use crate::Finding;
use meshlens_model::mesh::meta::labels_match;

/// IST0127 (no workload selected), IST0101 (a `namespaces`/`notNamespaces` entry matches no Namespace).
///
/// Only workloads in the mesh count: those with a sidecar, and ambient ones.
pub fn authorization_policies(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let workloads: Vec<(&str, &Labels)> =
        cx.workloads().iter().filter(|w| w.in_mesh || w.in_ambient_mode()).map(|w| (w.namespace, w.labels)).collect();
    let root = cx.mesh.root_namespace();
    for (loaded, policy) in cx.authorization_policies() {
        let namespace = policy.metadata.ns();
        let selector = policy.spec.selector.as_ref().map(|s| &s.match_labels);
        let no_workloads = match selector {
            // A mesh-wide policy without a selector applies to whatever runs anywhere.
            None if namespace == root => false,
            None => !workloads.iter().any(|(ns, _)| *ns == namespace),
            Some(selector) => !workloads
                .iter()
                .any(|(ns, labels)| (namespace == root || *ns == namespace) && labels_match(selector, labels)),
        };
        if no_workloads {
            let labels = selector.map(selector_string).unwrap_or_default();
            let message = format!("No matching workloads for this resource with the following labels: {labels}");
            cx.report(out, &IST0127, loaded, message);
        }
        let sources = policy.spec.rules.iter().flat_map(|r| &r.from).map(|f| &f.source);
        for pattern in sources.flat_map(|s| s.namespaces.iter().chain(&s.not_namespaces)) {
            if !cx.namespaces().any(|(_, ns)| namespace_matches(pattern, &ns.metadata.name)) {
                cx.report(out, &IST0101, loaded, format!("Referenced namespace not found: {pattern:?}"));
            }
        }
    }
}

/// Istio's namespace patterns: `*`, `*suffix`, `prefix*`, or an exact name (case-insensitive).
fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        namespace.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        namespace.starts_with(prefix)
    } else {
        pattern.eq_ignore_ascii_case(namespace)
    }
}
