//! Sidecar checks (istioctl's `sidecar.SelectorAnalyzer`): selectors that pick no workload, Sidecars that
//! overlap, and Sidecars for ambient workloads, which run none.

use super::codes::{IST0101, IST0110, IST0111, IST0167};
use super::context::{Context, go_list, selector_string};
use crate::Finding;
use meshlens_model::mesh::LoadedResource;
use meshlens_model::mesh::meta::labels_match;
use meshlens_model::mesh::networking::Sidecar;
use std::collections::{BTreeMap, BTreeSet};

/// IST0101 (selector picks nothing), IST0110 (a workload picked by several Sidecars), IST0111 (several
/// namespace-wide Sidecars in one namespace), IST0167 (Sidecar for ambient workloads or namespaces).
pub fn selectors(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut namespace_wide: BTreeMap<&str, Vec<(&LoadedResource, &Sidecar)>> = BTreeMap::new();
    // Workload index -> the Sidecars selecting it.
    let mut by_workload: BTreeMap<usize, Vec<(&LoadedResource, &Sidecar)>> = BTreeMap::new();
    for (loaded, sidecar) in cx.sidecars() {
        let namespace = sidecar.metadata.ns();
        let selector = match &sidecar.spec.workload_selector {
            Some(s) if !s.labels.is_empty() => &s.labels,
            _ => {
                namespace_wide.entry(namespace).or_default().push((loaded, sidecar));
                continue;
            }
        };
        let mut found = false;
        for (index, workload) in cx.workloads().iter().enumerate() {
            if workload.namespace == namespace && labels_match(selector, workload.labels) {
                found = true;
                by_workload.entry(index).or_default().push((loaded, sidecar));
            }
        }
        if !found {
            let message = format!("Referenced selector not found: {:?}", selector_string(selector));
            cx.report(out, &IST0101, loaded, message);
        }
    }
    let mut ineffective_reported = BTreeSet::new();
    for (index, sidecars) in &by_workload {
        let workload = &cx.workloads()[*index];
        if workload.in_ambient_mode() {
            for &(loaded, sidecar) in sidecars {
                if ineffective_reported.insert(std::ptr::from_ref(sidecar)) {
                    let reason = "selected workload is in ambient mode, the policy has no impact";
                    cx.report(out, &IST0167, loaded, format!("The policy has no impact: {reason}."));
                }
            }
        } else if sidecars.len() > 1 {
            let names = sorted_names(sidecars);
            for &(loaded, _) in sidecars {
                let message = format!(
                    "The Sidecars {names} in namespace {:?} select the same workload pod {:?}, which can lead to \
                     undefined behavior.",
                    workload.namespace, workload.name
                );
                cx.report(out, &IST0110, loaded, message);
            }
        }
    }
    for (namespace, sidecars) in &namespace_wide {
        if cx.namespace(namespace).is_some_and(|ns| in_ambient_mode(&ns.metadata.labels)) {
            for &(loaded, sidecar) in sidecars {
                if ineffective_reported.insert(std::ptr::from_ref(sidecar)) {
                    let reason = "namespace is in ambient mode, the policy has no impact";
                    cx.report(out, &IST0167, loaded, format!("The policy has no impact: {reason}."));
                }
            }
        } else if sidecars.len() > 1 {
            let names = sorted_names(sidecars);
            for &(loaded, _) in sidecars {
                let message = format!(
                    "The Sidecars {names} in namespace {namespace:?} have no workload selector, which can lead to \
                     undefined behavior."
                );
                cx.report(out, &IST0111, loaded, message);
            }
        }
    }
}

fn sorted_names(sidecars: &[(&LoadedResource, &Sidecar)]) -> String {
    let mut names: Vec<&str> = sidecars.iter().map(|(_, s)| s.metadata.name.as_str()).collect();
    names.sort_unstable();
    go_list(names)
}

/// An ambient namespace, unless sidecar injection or a revision label says otherwise.
fn in_ambient_mode(labels: &BTreeMap<String, String>) -> bool {
    if labels.get("istio-injection").is_some_and(|v| v == "enabled")
        || labels.get("istio.io/rev").is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    labels.get("istio.io/dataplane-mode").is_some_and(|v| v == "ambient")
}
