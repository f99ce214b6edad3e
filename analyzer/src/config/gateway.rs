//! Gateway checks (istioctl's `gateway.*` analyzers): workloads and ports behind a Gateway, its TLS
//! credentials, and conflicts between Gateways on the same workloads.

use super::codes::{IST0101, IST0138, IST0145, IST0161, IST0162};
use super::context::{Context, Labels, Workload, full_name, selector_string};
use crate::Finding;
use meshlens_model::mesh::meta::{IntOrString, labels_match};
use meshlens_model::mesh::networking::{Gateway, ServerTlsSettings};
use meshlens_model::mesh::{Kind, LoadedResource};
use std::collections::{BTreeMap, BTreeSet};

/// Pods and Deployments a Gateway's selector picks (an empty selector picks every one, as in Kubernetes).
fn gateway_workloads<'c, 'a>(cx: &'c Context<'a>, gateway: &Gateway) -> Vec<&'c Workload<'a>> {
    cx.workloads()
        .iter()
        .filter(|w| w.kind != Kind::WorkloadEntry && labels_match(&gateway.spec.selector, w.labels))
        .collect()
}

fn report_no_workload(cx: &Context<'_>, out: &mut Vec<Finding>, loaded: &LoadedResource, gateway: &Gateway) {
    let selector = selector_string(&gateway.spec.selector);
    cx.report(out, &IST0101, loaded, format!("Referenced selector not found: {selector:?}"));
}

/// IST0101 (no workload), IST0162 (server port not exposed by any Service of the gateway workloads).
pub fn ingress_gateway_ports(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, gateway) in cx.gateways() {
        let workloads = gateway_workloads(cx, gateway);
        if workloads.is_empty() {
            report_no_workload(cx, out, loaded, gateway);
            continue;
        }
        // A server port may be a Service's targetPort (what the gateway proxy listens on) or, since Istio
        // translates it, a Service port.
        let mut exposed = BTreeSet::new();
        for workload in &workloads {
            let services = cx.services().map(|(_, s)| s).filter(|s| {
                s.metadata.ns() == workload.namespace
                    && s.spec.selector.as_ref().is_some_and(|sel| !sel.is_empty() && labels_match(sel, workload.labels))
            });
            for port in services.flat_map(|s| &s.spec.ports) {
                // Kubernetes defaults the protocol to TCP; UDP/SCTP ports cannot carry gateway traffic.
                if port.protocol.as_deref().is_none_or(|p| p == "TCP") {
                    exposed.insert(u32::from(port.port));
                    if let Some(IntOrString::Int(target)) = port.target_port
                        && let Ok(target) = u32::try_from(target)
                    {
                        exposed.insert(target);
                    }
                }
            }
        }
        let selector = selector_string(&gateway.spec.selector);
        for server in &gateway.spec.servers {
            let number = server.port.number;
            // A server without a port is a schema error, not this check's business.
            if number != 0 && !exposed.contains(&number) {
                let message = format!(
                    "The gateway is listening on a target port (port {number}) that is not defined in the Service \
                     associated with its workload instances (Pod selector {selector}). If you need to access the \
                     gateway port through the gateway Service, it will not be available."
                );
                cx.report(out, &IST0162, loaded, message);
            }
        }
    }
}

/// IST0101 (no workload, or credentialName Secret missing), IST0161 (Secret without certificate and key).
/// The Secret must live in the namespace of the gateway workloads, not of the Gateway resource.
pub fn secrets(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, gateway) in cx.gateways() {
        let workloads = gateway_workloads(cx, gateway);
        if workloads.is_empty() {
            report_no_workload(cx, out, loaded, gateway);
            continue;
        }
        let namespaces: BTreeSet<&str> = workloads.iter().map(|w| w.namespace).collect();
        let credentials = gateway
            .spec
            .servers
            .iter()
            .filter_map(|s| s.tls.as_ref())
            .flat_map(|tls| tls.credential_name.iter().chain(&tls.credential_names).filter(|c| !c.is_empty()));
        for credential in credentials {
            let (candidates, name) = match credential.split_once('/') {
                Some((ns, name)) => (vec![ns], name),
                None => (namespaces.iter().copied().collect(), credential.as_str()),
            };
            let secret = cx
                .secrets()
                .find(|(_, s)| s.metadata.name == name && candidates.contains(&s.metadata.ns()))
                .map(|(_, s)| s);
            match secret {
                None => {
                    cx.report(out, &IST0101, loaded, format!("Referenced credentialName not found: {credential:?}"))
                }
                Some(secret) if !has_certificate_and_key(&secret.data) => {
                    let message = format!(
                        "The credential referenced by the Gateway {} in namespace {} is invalid, which can cause the \
                         traffic not to work as expected.",
                        gateway.metadata.name,
                        secret.metadata.ns()
                    );
                    cx.report(out, &IST0161, loaded, message);
                }
                Some(_) => {}
            }
        }
    }
}

/// The key pairs Istio reads a gateway certificate from. meshlens keeps key names only, so a present but
/// malformed certificate passes.
fn has_certificate_and_key(data: &BTreeMap<String, String>) -> bool {
    [("tls.crt", "tls.key"), ("cert", "key")]
        .iter()
        .any(|(cert, key)| data.contains_key(*cert) && data.contains_key(*key))
}

/// IST0145: two Gateways on the same workloads (equal selectors, or some workload both select) declare the
/// same port and an identical host with the same `bind`.
pub fn conflicting_gateways(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let gateways: Vec<(&LoadedResource, &Gateway)> = cx.gateways().collect();
    for &(loaded, gateway) in &gateways {
        let selector = selector_string(&gateway.spec.selector);
        let same_workloads: Vec<&Gateway> = gateways
            .iter()
            .map(|&(_, other)| other)
            .filter(|other| {
                !std::ptr::eq(*other, gateway) && share_workloads(cx, &gateway.spec.selector, &other.spec.selector)
            })
            .collect();
        for server in &gateway.spec.servers {
            let bind = server.bind.as_deref().unwrap_or("");
            let conflicting: BTreeSet<String> = same_workloads
                .iter()
                .filter(|other| {
                    other.spec.servers.iter().any(|theirs| {
                        theirs.port.number == server.port.number
                            && theirs.bind.as_deref().unwrap_or("") == bind
                            && theirs.hosts.iter().any(|h| server.hosts.contains(h))
                    })
                })
                .map(|other| full_name(&other.metadata))
                .collect();
            if !conflicting.is_empty() {
                let message = format!(
                    "Conflict with gateways {} (workload selector {selector}, port {}, hosts {}).",
                    conflicting.into_iter().collect::<Vec<_>>().join(","),
                    server.port.number,
                    server.hosts.join(",")
                );
                cx.report(out, &IST0145, loaded, message);
            }
        }
    }
}

fn share_workloads(cx: &Context<'_>, a: &Labels, b: &Labels) -> bool {
    a == b || cx.workloads().iter().any(|w| labels_match(a, w.labels) && labels_match(b, w.labels))
}

/// IST0138: a Gateway shares a TLS certificate with another Gateway whose selector includes its own (so
/// both run on the same workloads).
pub fn duplicate_certificates(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let gateways: Vec<&Gateway> = cx.gateways().map(|(_, g)| g).collect();
    for (loaded, gateway) in cx.gateways() {
        let name = full_name(&gateway.metadata);
        for other in &gateways {
            if std::ptr::eq(*other, gateway) || !labels_match(&gateway.spec.selector, &other.spec.selector) {
                continue;
            }
            let own_tls = gateway.spec.servers.iter().filter_map(|s| s.tls.as_ref());
            for tls in own_tls {
                let shared =
                    other.spec.servers.iter().filter_map(|s| s.tls.as_ref()).filter(|t| same_certificate(tls, t));
                for _ in shared {
                    let message = format!(
                        "Duplicate certificate in multiple gateways [{name} {}] may cause 404s if clients re-use \
                         HTTP2 connections.",
                        full_name(&other.metadata)
                    );
                    cx.report(out, &IST0138, loaded, message);
                }
            }
        }
    }
}

/// Same `credentialName`, or (both without one) the same certificate and key files.
fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    match (non_empty(&a.credential_name), non_empty(&b.credential_name)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            let cert = non_empty(&a.server_certificate).is_some_and(|c| Some(c) == non_empty(&b.server_certificate));
            let key = non_empty(&a.private_key).is_some_and(|k| Some(k) == non_empty(&b.private_key));
            cert && key
        }
        _ => false,
    }
}
