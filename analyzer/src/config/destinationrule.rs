//! DestinationRule checks (istioctl's `destinationrule.*` analyzers): server verification when
//! originating TLS, unknown hosts, and subsets that select no workload.

use super::codes::{IST0128, IST0129, IST0173, IST0174};
use super::context::{Backing, Context, Labels, Workload, full_name};
use crate::Finding;
use meshlens_model::mesh::meta::labels_match;
use meshlens_model::mesh::networking::{ClientTlsMode, ClientTlsSettings, DestinationRule};

/// IST0128/IST0129: SIMPLE or MUTUAL TLS origination without `caCertificates` (unless a `credentialName`
/// on a workload-selected rule supplies the CA).
pub fn ca_certificates(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, dr) in cx.destination_rules() {
        let Some(policy) = &dr.spec.traffic_policy else { continue };
        let name = full_name(&dr.metadata);
        let namespace = dr.metadata.ns();
        if let Some(mode) = unverified_tls(dr, policy.tls.as_ref()) {
            let message = format!(
                "DestinationRule {name} in namespace {namespace} has TLS mode set to {} but no caCertificates are set \
                 to validate server identity for host: {}",
                mode.as_str(),
                dr.spec.host
            );
            cx.report(out, &IST0128, loaded, message);
        }
        for port_policy in &policy.port_level_settings {
            if let Some(mode) = unverified_tls(dr, port_policy.tls.as_ref()) {
                let port = port_policy.port.as_ref().and_then(|p| p.number).unwrap_or_default();
                let message = format!(
                    "DestinationRule {name} in namespace {namespace} has TLS mode set to {} but no caCertificates are \
                     set to validate server identity for host: {} at port {port}",
                    mode.as_str(),
                    dr.spec.host
                );
                cx.report(out, &IST0129, loaded, message);
            }
        }
    }
}

fn unverified_tls(dr: &DestinationRule, tls: Option<&ClientTlsSettings>) -> Option<ClientTlsMode> {
    let tls = tls?;
    let mode = tls.mode.filter(|m| matches!(m, ClientTlsMode::Simple | ClientTlsMode::Mutual))?;
    let has_ca = tls.ca_certificates.as_deref().is_some_and(|c| !c.is_empty());
    let credential_with_selector =
        tls.credential_name.as_deref().is_some_and(|c| !c.is_empty()) && dr.spec.workload_selector.is_some();
    (!has_ca && !credential_with_selector).then_some(mode)
}

/// Labels Istio adds to every endpoint from the Node it runs on. meshlens does not load Nodes, so a
/// subset that needs them is taken to match a Pod that has a node.
const NODE_TOPOLOGY_LABELS: [&str; 5] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
    "topology.istio.io/cluster",
    "topology.istio.io/network",
];

/// IST0174 (host matches no visible service), IST0173 (a subset selects none of the host's workloads).
///
/// istioctl matches subsets against every Pod it is given; meshlens matches them against the workloads
/// behind the host (the Service's selector, or the ServiceEntry's workloadSelector or endpoints) and says
/// nothing when the configuration holds none of them, since files often carry routing config only.
pub fn subsets_select_workloads(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, dr) in cx.destination_rules() {
        let Some(entry) = cx.destination_host(dr.metadata.ns(), &dr.spec.export_to, &dr.spec.host) else {
            let message = format!(
                "The host {} defined in the DestinationRule does not match any services in the mesh.",
                dr.spec.host
            );
            cx.report(out, &IST0174, loaded, message);
            continue;
        };
        let candidates: Vec<Labels> = match &entry.backing {
            Backing::Service(service) => match &service.spec.selector {
                Some(selector) if !selector.is_empty() => {
                    workloads_in(cx, service.metadata.ns(), selector).into_iter().map(endpoint_labels).collect()
                }
                _ => continue,
            },
            Backing::ServiceEntry(se) => match &se.spec.workload_selector {
                Some(selector) if !selector.labels.is_empty() => {
                    workloads_in(cx, se.metadata.ns(), &selector.labels).into_iter().map(endpoint_labels).collect()
                }
                _ => se.spec.endpoints.iter().map(|e| e.labels.clone()).collect(),
            },
        };
        if candidates.is_empty() {
            continue;
        }
        for subset in &dr.spec.subsets {
            if !candidates.iter().any(|labels| subset_matches(&subset.labels, labels)) {
                let message = format!(
                    "The Subset {} defined in the DestinationRule does not select any pods. Which may lead to 503 UH \
                     (NoHealthyUpstream).",
                    subset.name
                );
                cx.report(out, &IST0173, loaded, message);
            }
        }
    }
}

fn workloads_in<'c, 'a>(cx: &'c Context<'a>, namespace: &str, selector: &Labels) -> Vec<&'c Workload<'a>> {
    cx.workloads().iter().filter(|w| w.namespace == namespace && labels_match(selector, w.labels)).collect()
}

/// A workload's labels as its endpoints carry them: plus `kubernetes.io/hostname` for Pods on a node, and
/// the node topology labels, whose values meshlens cannot know, marked as unknown.
fn endpoint_labels(workload: &Workload<'_>) -> Labels {
    let mut labels = workload.labels.clone();
    if let Some(node) = workload.node_name.filter(|n| !n.is_empty()) {
        labels.insert("kubernetes.io/hostname".to_owned(), node.to_owned());
        for key in NODE_TOPOLOGY_LABELS {
            labels.entry(key.to_owned()).or_insert_with(|| UNKNOWN.to_owned());
        }
    }
    labels
}

/// Stands for a label value that exists but that meshlens cannot see; it matches any selector value.
const UNKNOWN: &str = "\0unknown";

fn subset_matches(subset: &Labels, labels: &Labels) -> bool {
    subset.iter().all(|(key, value)| labels.get(key).is_some_and(|v| v == value || v == UNKNOWN))
}
