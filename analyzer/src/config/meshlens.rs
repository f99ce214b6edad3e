//! meshlens' own checks (`ML` codes): resilience and security gaps that `istioctl analyze` does not
//! report because the configuration is valid, only risky.

use super::codes::{ML1001, ML1002, ML1003, ML1004, ML1005, ML1006, ML1007, ML1008, ML1009};
use super::context::{Context, Labels, Workload, full_name, selector_string};
use crate::Finding;
use meshlens_model::mesh::k8s::Service;
use meshlens_model::mesh::meta::{IntOrString, labels_match};
use meshlens_model::mesh::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, HttpRetry, HttpRoute, StringMatch,
    TrafficPolicy,
};
use meshlens_model::mesh::security::{AuthorizationAction, MtlsMode};
use meshlens_model::mesh::{Duration, Kind, LoadedResource, Resource, host_matches, resolve_host};
use std::collections::BTreeSet;

/// `#index`, or the quoted name of a named HTTP route (as istioctl names rules).
fn rule_name(route: &HttpRoute, index: usize) -> String {
    route.name.as_ref().map_or_else(|| format!("#{index}"), |n| format!("{n:?}"))
}

fn destination_hosts(route: &HttpRoute) -> String {
    let hosts: BTreeSet<&str> = route.route.iter().map(|d| d.destination.host.as_str()).collect();
    hosts.into_iter().collect::<Vec<_>>().join(", ")
}

/// ML1001: an HTTP route that forwards without a timeout (`timeout: 0s` says so on purpose and passes).
pub fn route_timeouts(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, vs) in cx.virtual_services() {
        for (index, route) in vs.spec.http.iter().enumerate() {
            if !route.route.is_empty() && route.timeout.is_none() {
                let message = format!(
                    "HTTP route {} to {} has no timeout: Istio sets none, so callers wait as long as the upstream takes.",
                    rule_name(route, index),
                    destination_hosts(route)
                );
                cx.report(out, &ML1001, loaded, message);
            }
        }
    }
}

/// What Istio retries when a route has no `retries` block.
const ISTIO_DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const ISTIO_DEFAULT_ATTEMPTS: i32 = 2;

/// Retry conditions that can fire after the upstream received (and maybe applied) the request.
const UNSAFE_RETRY_ON: [&str; 7] =
    ["5xx", "gateway-error", "reset", "retriable-4xx", "retriable-status-codes", "deadline-exceeded", "internal"];

/// Methods whose repetition is not harmless.
const NON_IDEMPOTENT: [&str; 2] = ["POST", "PATCH"];

const HTTP_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// ML1002 (non-idempotent requests retried on unsafe conditions), ML1003 (retries that cannot fit in the
/// route timeout).
pub fn retry_policies(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, vs) in cx.virtual_services() {
        for (index, route) in vs.spec.http.iter().enumerate() {
            if route.route.is_empty() {
                continue;
            }
            let rule = rule_name(route, index);
            let methods: BTreeSet<&str> = route
                .matches
                .iter()
                .filter_map(|m| m.method.as_ref())
                .flat_map(matched_methods)
                .filter(|m| NON_IDEMPOTENT.contains(m))
                .collect();
            let (attempts, retry_on, defaulted) = match &route.retries {
                Some(retry) => (retry.attempts, retry.retry_on.as_deref().unwrap_or(ISTIO_DEFAULT_RETRY_ON), false),
                None => (ISTIO_DEFAULT_ATTEMPTS, ISTIO_DEFAULT_RETRY_ON, true),
            };
            let unsafe_conditions: Vec<&str> = retry_on
                .split(',')
                .map(str::trim)
                .filter(|c| UNSAFE_RETRY_ON.contains(c) || !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            if !methods.is_empty() && attempts > 0 && !unsafe_conditions.is_empty() {
                let methods = methods.into_iter().collect::<Vec<_>>().join("/");
                let mut conditions = unsafe_conditions.join(", ");
                if defaulted {
                    conditions.push_str(" (Istio's default retry policy)");
                }
                let message = format!(
                    "HTTP route {rule} matches {methods} requests and retries them on {conditions}: a request that \
                     reached the upstream may be applied twice."
                );
                cx.report(out, &ML1002, loaded, message);
            }
            if let (Some(timeout), Some(retry)) = (route.timeout, &route.retries) {
                check_retry_budget(cx, out, loaded, &rule, timeout, retry);
            }
        }
    }
}

fn check_retry_budget(
    cx: &Context<'_>,
    out: &mut Vec<Finding>,
    loaded: &LoadedResource,
    rule: &str,
    timeout: Duration,
    retry: &HttpRetry,
) {
    let (Ok(attempts), Some(per_try)) = (u32::try_from(retry.attempts), retry.per_try_timeout) else { return };
    if attempts == 0 || timeout == Duration::ZERO || per_try == Duration::ZERO {
        return;
    }
    // `attempts` counts retries; the first try comes on top, and the route timeout bounds them all.
    let Some(total) = per_try.as_std().checked_mul(attempts + 1) else { return };
    if total > timeout.as_std() {
        let message = format!(
            "HTTP route {rule} allows {attempts} retries of {per_try} each, {} with the first try, more than its \
             timeout {timeout}: the last retries never run.",
            Duration::from(total)
        );
        let fix = format!(
            "Set the route timeout to at least {} ((attempts + 1) × perTryTimeout), or lower attempts or perTryTimeout.",
            Duration::from(total)
        );
        cx.report_with_fix(out, &ML1003, loaded, message, fix);
    }
}

/// The HTTP methods a method match accepts: an exact method, the methods a prefix starts, or the plain
/// alternatives of a regex like `^(POST|PATCH)$`.
fn matched_methods(method: &StringMatch) -> Vec<&'static str> {
    let known = |m: &str| HTTP_METHODS.iter().copied().find(|k| k.eq_ignore_ascii_case(m));
    if let Some(exact) = &method.exact {
        return known(exact).into_iter().collect();
    }
    if let Some(prefix) = &method.prefix {
        return HTTP_METHODS.iter().copied().filter(|m| m.starts_with(prefix.to_ascii_uppercase().as_str())).collect();
    }
    let Some(regex) = &method.regex else { return Vec::new() };
    let bare = regex.trim_start_matches('^').trim_end_matches('$').trim_start_matches('(').trim_end_matches(')');
    bare.split('|').filter_map(known).collect()
}

/// ML1004 (no outlier detection), ML1005 (no connection-pool limits) for every Service and mesh-internal
/// ServiceEntry host, judged by the DestinationRule that applies to it from its own namespace.
pub fn circuit_breaking(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut hosts: Vec<(&LoadedResource, String, &str)> = Vec::new();
    for (loaded, service) in cx.services() {
        let external = service.spec.service_type.as_deref() == Some("ExternalName");
        if !external && !is_platform(&service.metadata.labels) {
            let namespace = service.metadata.ns();
            hosts.push((loaded, resolve_host(&service.metadata.name, namespace), namespace));
        }
    }
    for (loaded, se) in cx.service_entries() {
        if se.spec.location.as_deref() == Some("MESH_INTERNAL") {
            hosts.extend(se.spec.hosts.iter().map(|h| (loaded, resolve_host(h, se.metadata.ns()), se.metadata.ns())));
        }
    }
    for (service, fqdn, namespace) in hosts {
        if cx.is_synthetic(service) {
            continue;
        }
        let rule = cx.mesh.destination_rule_for(&fqdn, namespace);
        let rule_loaded = rule.and_then(|dr| cx.mesh.get(Kind::DestinationRule, dr.metadata.ns(), &dr.metadata.name));
        let (subject, reason) = match (rule, rule_loaded) {
            (Some(dr), Some(loaded)) => (loaded, format!("DestinationRule {} sets none", full_name(&dr.metadata))),
            _ => (service, "no DestinationRule applies to it".to_owned()),
        };
        let policies = rule.map(traffic_policies).unwrap_or_default();
        if !policies.iter().any(|p| p.outlier_detection.is_some()) {
            cx.report(out, &ML1004, subject, format!("Service {fqdn} has no outlier detection: {reason}."));
        }
        if !policies.iter().any(|p| p.connection_pool.as_ref().is_some_and(has_limits)) {
            cx.report(out, &ML1005, subject, format!("Service {fqdn} has no connection-pool limits: {reason}."));
        }
    }
}

/// The rule's policies for the whole host, its ports and its subsets, as one shape.
fn traffic_policies(dr: &DestinationRule) -> Vec<TrafficPolicy> {
    let mut policies = Vec::new();
    let mut add = |policy: &TrafficPolicy| {
        policies.push(policy.clone());
        for port in &policy.port_level_settings {
            policies.push(TrafficPolicy {
                outlier_detection: port.outlier_detection.clone(),
                connection_pool: port.connection_pool.clone(),
                ..TrafficPolicy::default()
            });
        }
    };
    dr.spec.traffic_policy.iter().for_each(&mut add);
    dr.spec.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()).for_each(&mut add);
    policies
}

fn has_limits(pool: &ConnectionPoolSettings) -> bool {
    pool.tcp.as_ref().is_some_and(|t| t.max_connections.is_some())
        || pool.http.as_ref().is_some_and(|h| h.http1_max_pending_requests.is_some() || h.http2_max_requests.is_some())
}

/// Istio's own components (control plane, gateways) carry an `istio` or `release: istio` label.
fn is_platform(labels: &Labels) -> bool {
    labels.contains_key("istio") || labels.get("release").is_some_and(|r| r == "istio")
}

/// ML1006 (client TLS DISABLE/SIMPLE towards STRICT workloads), ML1007 (PeerAuthentication that accepts
/// plaintext).
pub fn mutual_tls(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, dr) in cx.destination_rules() {
        for target in tls_targets(dr) {
            for (service, fqdn) in services_matching(cx, dr) {
                if strict_destination(cx, service, &target) {
                    let mut what = fqdn;
                    if let Some(port) = target.port {
                        what.push_str(&format!(" port {port}"));
                    }
                    if let Some(subset) = target.subset {
                        what.push_str(&format!(" subset {subset}"));
                    }
                    let message = format!(
                        "DestinationRule sets tls.mode {} for {what}, but PeerAuthentication requires STRICT mTLS \
                         there: connections will be rejected.",
                        target.mode.as_str()
                    );
                    cx.report(out, &ML1006, loaded, message);
                }
            }
        }
    }
    let root = cx.mesh.root_namespace();
    for (loaded, pa) in cx.peer_authentications() {
        let plaintext = |mode: MtlsMode| matches!(mode, MtlsMode::Permissive | MtlsMode::Disable);
        let mut parts = Vec::new();
        if let Some(mode) = pa.spec.mtls.as_ref().map(|m| m.mode).filter(|m| plaintext(*m)) {
            let scope = match pa.spec.selector.as_ref().filter(|s| !s.match_labels.is_empty()) {
                Some(selector) => format!("for workloads {}", selector_string(&selector.match_labels)),
                None if pa.metadata.ns() == root => "mesh-wide".to_owned(),
                None => format!("for namespace {}", pa.metadata.ns()),
            };
            parts.push(format!("mode {} {scope}", mode.as_str()));
        }
        for (port, mtls) in pa.spec.port_level_mtls.iter().filter(|(_, m)| plaintext(m.mode)) {
            parts.push(format!("port {port}: {}", mtls.mode.as_str()));
        }
        if !parts.is_empty() {
            cx.report(out, &ML1007, loaded, format!("PeerAuthentication accepts plaintext: {}.", parts.join("; ")));
        }
    }
}

/// A place where a DestinationRule makes clients skip Istio mTLS.
struct TlsTarget<'d> {
    mode: ClientTlsMode,
    port: Option<u32>,
    subset: Option<&'d str>,
    subset_labels: Option<&'d Labels>,
}

fn tls_targets(dr: &DestinationRule) -> Vec<TlsTarget<'_>> {
    let skips_mtls = |tls: &Option<ClientTlsSettings>| {
        tls.as_ref().and_then(|t| t.mode).filter(|m| matches!(m, ClientTlsMode::Disable | ClientTlsMode::Simple))
    };
    let mut targets = Vec::new();
    let policies = dr
        .spec
        .traffic_policy
        .iter()
        .map(|p| (p, None))
        .chain(dr.spec.subsets.iter().filter_map(|s| s.traffic_policy.as_ref().map(|p| (p, Some(s)))));
    for (policy, subset) in policies {
        let subset_name = subset.map(|s| s.name.as_str());
        let subset_labels = subset.map(|s| &s.labels);
        if let Some(mode) = skips_mtls(&policy.tls) {
            targets.push(TlsTarget { mode, port: None, subset: subset_name, subset_labels });
        }
        for port_policy in &policy.port_level_settings {
            if let Some(mode) = skips_mtls(&port_policy.tls) {
                let port = port_policy.port.as_ref().and_then(|p| p.number);
                targets.push(TlsTarget { mode, port, subset: subset_name, subset_labels });
            }
        }
    }
    targets
}

/// Kubernetes Services whose FQDN the rule's host covers.
fn services_matching<'a>(cx: &Context<'a>, dr: &DestinationRule) -> Vec<(&'a Service, String)> {
    let host = resolve_host(&dr.spec.host, dr.metadata.ns());
    cx.services()
        .map(|(_, s)| (s, resolve_host(&s.metadata.name, s.metadata.ns())))
        .filter(|(_, fqdn)| host_matches(&host, fqdn))
        .collect()
}

/// Whether PeerAuthentication makes any workload behind the service (or the namespace, when the
/// configuration shows none) require mTLS on the targeted port.
fn strict_destination(cx: &Context<'_>, service: &Service, target: &TlsTarget<'_>) -> bool {
    let namespace = service.metadata.ns();
    let port = target.port.and_then(|p| workload_port(service, p));
    let workloads: Vec<&Workload<'_>> = match &service.spec.selector {
        Some(selector) if !selector.is_empty() => cx
            .workloads()
            .iter()
            .filter(|w| w.namespace == namespace && labels_match(selector, w.labels))
            .filter(|w| target.subset_labels.is_none_or(|labels| labels_match(labels, w.labels)))
            .collect(),
        _ => Vec::new(),
    };
    if workloads.is_empty() {
        return cx.mesh.peer_authentication_mode(namespace, &Labels::new(), port) == MtlsMode::Strict;
    }
    workloads.iter().any(|w| cx.mesh.peer_authentication_mode(namespace, w.labels, port) == MtlsMode::Strict)
}

/// The workload port a service port forwards to (PeerAuthentication's port-level settings use it).
fn workload_port(service: &Service, port: u32) -> Option<u16> {
    let service_port = service.spec.ports.iter().find(|p| u32::from(p.port) == port)?;
    match service_port.target_port {
        Some(IntOrString::Int(target)) => u16::try_from(target).ok(),
        _ => Some(service_port.port),
    }
}

/// ML1008: a workload no ALLOW/DENY/CUSTOM AuthorizationPolicy applies to. Pods that a Deployment in the
/// input owns are judged through the Deployment; Istio's own workloads are left out.
pub fn authorization_coverage(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let root = cx.mesh.root_namespace();
    let deployments: Vec<&Workload<'_>> = cx.workloads().iter().filter(|w| w.kind == Kind::Deployment).collect();
    for workload in cx.workloads() {
        let owned = workload.kind == Kind::Pod
            && deployments.iter().any(|d| {
                let Resource::Deployment(deployment) = &d.loaded.resource else { return false };
                let selector = &deployment.spec.selector.match_labels;
                d.namespace == workload.namespace && !selector.is_empty() && labels_match(selector, workload.labels)
            });
        if owned || is_platform(workload.labels) {
            continue;
        }
        let covered = cx.authorization_policies().any(|(_, policy)| {
            let namespace = policy.metadata.ns();
            let applies_here = namespace == root || namespace == workload.namespace;
            let selected = policy.spec.selector.as_ref().is_none_or(|s| labels_match(&s.match_labels, workload.labels));
            policy.spec.action != AuthorizationAction::Audit && applies_here && selected
        });
        if !covered {
            let reference = cx.mesh.reference(workload.loaded);
            let message =
                format!("{reference} is covered by no AuthorizationPolicy: every caller that can reach it is allowed.");
            cx.report(out, &ML1008, workload.loaded, message);
        }
    }
}

/// ML1009: a route with several destinations whose weights do not add up to 100.
pub fn route_weights(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, vs) in cx.virtual_services() {
        let http =
            vs.spec.http.iter().enumerate().map(|(i, r)| {
                ("HTTP", rule_name(r, i), r.route.iter().map(|d| d.weight.unwrap_or(0)).collect::<Vec<_>>())
            });
        let tcp = vs.spec.tcp.iter().enumerate().map(|(i, r)| ("TCP", format!("#{i}"), weights(&r.route)));
        let tls = vs.spec.tls.iter().enumerate().map(|(i, r)| ("TLS", format!("#{i}"), weights(&r.route)));
        for (protocol, rule, weights) in http.chain(tcp).chain(tls) {
            let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
            if weights.len() > 1 && total != 100 {
                let consequence = if total == 0 { ": Istio rejects a total of 0" } else { "" };
                let message = format!(
                    "{protocol} route {rule} splits traffic between {} destinations with weights summing to {total}, \
                     not 100{consequence}.",
                    weights.len()
                );
                cx.report(out, &ML1009, loaded, message);
            }
        }
    }
}

fn weights(route: &[meshlens_model::mesh::networking::RouteDestination]) -> Vec<i32> {
    route.iter().map(|d| d.weight.unwrap_or(0)).collect()
}
