//! Service checks (istioctl's `service.PortNameAnalyzer` and `deployment.ServiceAssociationAnalyzer`):
//! port naming, and Services that disagree about the ports of the Deployment they select.

use super::codes::{IST0116, IST0118, IST0137, IST0150};
use super::context::{Context, full_name, go_list};
use crate::Finding;
use meshlens_model::mesh::Kind;
use meshlens_model::mesh::k8s::{Service, ServicePort};
use meshlens_model::mesh::meta::{IntOrString, ObjectMeta, labels_match};
use std::collections::BTreeMap;

/// Protocols Istio recognizes as a port name's prefix (before the first `-`), case-insensitively.
const PROTOCOLS: [&str; 11] =
    ["tcp", "udp", "grpc", "http", "http_proxy", "http2", "https", "tls", "mongo", "redis", "mysql"];

/// Ports Istio treats as TCP whatever their name, because sniffing would break their clients.
const WELL_KNOWN_TCP_PORTS: [u16; 4] = [25, 53, 3306, 27017];

/// Labels of Services that gateway controllers create; users do not name their ports.
const MANAGED_GATEWAY_LABEL: &str = "gateway.istio.io/managed";

/// IST0118 (port name declares no protocol), IST0150 (ExternalName Service port with an unusable name).
pub fn port_names(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, service) in cx.services() {
        if is_control_plane(&service.metadata) || service.metadata.labels.contains_key(MANAGED_GATEWAY_LABEL) {
            continue;
        }
        let external_name = service.spec.service_type.as_deref() == Some("ExternalName");
        for port in &service.spec.ports {
            let name = port.name.as_deref().unwrap_or("");
            if !declares_protocol(port) || external_name && name == "tcp" {
                let name = if name.is_empty() { "(unnamed)" } else { name };
                let message = if external_name {
                    "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched \
                     traffic for ports serving TCP protocol from being forwarded correctly"
                        .to_owned()
                } else {
                    format!(
                        "Port name {name} (port: {}, targetPort: {}) doesn't follow the naming convention of Istio port.",
                        port.port,
                        target_port(port)
                    )
                };
                let code = if external_name { &IST0150 } else { &IST0118 };
                cx.report(out, code, loaded, message);
            }
        }
    }
}

/// istioctl skips the control plane's own Services (labelled `istio` or `release: istio`).
fn is_control_plane(meta: &ObjectMeta) -> bool {
    meta.labels.contains_key("istio") || meta.labels.get("release").is_some_and(|r| r == "istio")
}

/// Istio's protocol selection for a Service port: UDP, else `appProtocol` or the name's prefix.
fn declares_protocol(port: &ServicePort) -> bool {
    if port.protocol.as_deref() == Some("UDP") {
        return true;
    }
    let name = port.app_protocol.as_deref().or(port.name.as_deref()).unwrap_or("");
    if port.app_protocol.is_some() && matches!(name, "kubernetes.io/h2c" | "kubernetes.io/ws" | "kubernetes.io/wss") {
        return true;
    }
    if name.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("grpc-web")) {
        return true;
    }
    let prefix = name.split_once('-').map_or(name, |(p, _)| p);
    PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(prefix)) || WELL_KNOWN_TCP_PORTS.contains(&port.port)
}

/// The target port as written, or the port (Kubernetes' default).
fn target_port(port: &ServicePort) -> String {
    match &port.target_port {
        Some(IntOrString::Int(n)) if *n != 0 => n.to_string(),
        Some(IntOrString::String(s)) if !s.is_empty() => s.clone(),
        _ => port.port.to_string(),
    }
}

/// IST0116 (one port, several protocols), IST0137 (one targetPort, several ports) across the Services
/// selecting an injected Deployment's pods.
pub fn deployment_services(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for workload in cx.workloads().iter().filter(|w| w.kind == Kind::Deployment && w.in_mesh) {
        // Waypoint proxies are deployed by Istio itself.
        let deployment_labels = &workload.loaded.resource.metadata().labels;
        if deployment_labels.get(MANAGED_GATEWAY_LABEL).is_some_and(|v| v == "istio.io-mesh-controller") {
            continue;
        }
        let services: Vec<&Service> = cx
            .services()
            .map(|(_, s)| s)
            .filter(|s| {
                s.metadata.ns() == workload.namespace
                    && s.spec.selector.as_ref().is_some_and(|sel| !sel.is_empty() && labels_match(sel, workload.labels))
            })
            .collect();
        let mut protocols: BTreeMap<u16, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
        let mut target_ports: BTreeMap<String, BTreeMap<u16, String>> = BTreeMap::new();
        for service in &services {
            let name = full_name(&service.metadata);
            for port in &service.spec.ports {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                protocols.entry(port.port).or_default().entry(protocol).or_default().push(name.clone());
                target_ports.entry(target_port(port)).or_default().insert(port.port, name.clone());
            }
        }
        for (port, by_protocol) in protocols.iter().filter(|(_, p)| p.len() > 1) {
            let mut names: Vec<&String> = by_protocol.values().flatten().collect();
            names.sort();
            let message = format!(
                "This deployment {} is associated with multiple services using port {port} but different protocols: {}",
                workload.name,
                go_list(names)
            );
            cx.report(out, &IST0116, workload.loaded, message);
        }
        for (target, by_port) in target_ports.iter().filter(|(_, p)| p.len() > 1) {
            let mut names: Vec<&String> = by_port.values().collect();
            names.sort();
            let message = format!(
                "This deployment {} is associated with multiple services {} using targetPort {target:?} but \
                 different ports: {}.",
                workload.name,
                go_list(names),
                go_list(by_port.keys())
            );
            cx.report(out, &IST0137, workload.loaded, message);
        }
    }
}
