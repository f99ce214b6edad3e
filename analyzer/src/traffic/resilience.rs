//! Resilience gaps: per service and per route, what is configured (route timeout, retries, outlier
//! detection, connection-pool limits) beside what was observed (timeouts, exhausted retries, overflows,
//! connection failures, bursts of 5xx, retried requests, latency tail), and retry amplification along the
//! observed call chains.
//!
//! Failures are counted on the client side (what callers experienced). Retries are counted on the server
//! side: Envoy keeps the `x-request-id` across tries, so a request the destination logged more than once
//! was retried, whatever the client's log format says (`attempts`, when a format records it, counts too).

use super::codes::{ML2007, ML2008, ML2009, ML2010, ML2011, ML2012};
use super::routes::{Failures, RouteKind, RouteReport, route_table};
use super::stats::Latency;
use super::{Evidence, find_workload, finding, service_resource};
use crate::Finding;
use meshlens_model::mesh::meta::labels_match;
use meshlens_model::mesh::networking::{DestinationRule, HttpRetry, HttpRoute, TrafficPolicy};
use meshlens_model::mesh::{Duration, MeshConfig, WorkloadRef};
use meshlens_model::names::service_fqdn_parts;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Server errors within one bucket of this many seconds that make a burst: Istio's default outlier
/// detection interval, the time scale on which ejection would react.
pub const BURST_SECONDS: u32 = 10;
/// Server errors within one bucket that make a burst.
pub const BURST_MIN_ERRORS: u64 = 5;

/// Retry conditions that can fire after the upstream received the request (as ML1002 counts them).
pub(super) const UNSAFE_RETRY_ON: [&str; 7] =
    ["5xx", "gateway-error", "reset", "retriable-4xx", "retriable-status-codes", "deadline-exceeded", "internal"];
/// What Istio retries when a route has no `retries` block.
pub(super) const ISTIO_DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// What the configuration says about a service's resilience.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceConfig {
    /// Routes (bound to `mesh`) for the service's host.
    pub routes: usize,
    pub routes_with_timeout: usize,
    /// Routes with an explicit `retries` block retrying at least once.
    pub routes_with_retries: usize,
    pub outlier_detection: bool,
    pub connection_limits: bool,
    /// `Kind ns/name` of the DestinationRule that applies, if any.
    pub destination_rule: Option<String>,
}

/// Requests the destination received more than once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Retries {
    /// Distinct requests (by `x-request-id`) the destination logged.
    pub requests: u64,
    /// Of those, logged more than once (or with `attempts` > 1).
    pub retried: u64,
    /// Most tries of one request.
    pub max_tries: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bursts {
    /// Buckets of [`BURST_SECONDS`] with at least [`BURST_MIN_ERRORS`] server errors.
    pub windows: u64,
    /// Most server errors in one bucket.
    pub worst: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceResilience {
    pub service: String,
    /// Client-side requests to the service.
    pub requests: u64,
    pub failures: Failures,
    pub bursts: Bursts,
    pub retries: Retries,
    /// Share of the destination's distinct requests that were retried.
    pub retry_rate: f64,
    /// Server-side latency: the service's own response time, without the callers' network and retries.
    pub latency: Option<Latency>,
    pub configured: ServiceConfig,
    /// Observed failures the configuration does nothing about.
    pub gaps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteResilience {
    pub route: String,
    pub timeout: Option<Duration>,
    pub retries: Option<HttpRetry>,
    pub requests: u64,
    pub failures: Failures,
    /// Client-side latency through the route (includes retries).
    pub latency: Option<Latency>,
}

/// A call chain on which every hop retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Amplification {
    /// The calling workload, then each service called.
    pub chain: Vec<String>,
    /// Configured retries of each hop (the services after the first element).
    pub attempts: Vec<u32>,
    /// Product of (retries + 1) over the hops: the most tries the last service gets for one request.
    pub worst_case_tries: u64,
    /// Most tries of one request the last service actually logged.
    pub observed_max_tries: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResilienceReport {
    pub services: Vec<ServiceResilience>,
    pub routes: Vec<RouteResilience>,
    pub amplification: Vec<Amplification>,
}

/// Tries per request at one destination service for one method.
#[derive(Debug)]
pub(super) struct RetryRow {
    pub(super) destination_service: String,
    pub(super) method: Option<String>,
    pub(super) retries: Retries,
}

/// Buckets of [`BURST_SECONDS`] in which a service's callers saw at least [`BURST_MIN_ERRORS`] server
/// errors.
#[derive(Debug)]
pub(super) struct BurstRow {
    pub(super) destination_service: String,
    pub(super) bursts: Bursts,
}

/// HTTP routes bound to `mesh` that serve `host`, with the VirtualService's namespace.
pub(super) fn mesh_routes<'a>(mesh: &'a MeshConfig, host: &str) -> Vec<&'a HttpRoute> {
    mesh.virtual_services_for(host, "mesh")
        .into_iter()
        .flat_map(|vs| &vs.spec.http)
        .filter(|r| !r.route.is_empty())
        .collect()
}

fn retries_of(route: &HttpRoute) -> u32 {
    route.retries.as_ref().and_then(|r| u32::try_from(r.attempts).ok()).unwrap_or(0)
}

/// The DestinationRule callers of `host` use (looked up from the service's namespace, as for its own
/// workloads' calls).
pub(super) fn destination_rule<'a>(mesh: &'a MeshConfig, host: &str) -> Option<&'a DestinationRule> {
    let namespace = service_fqdn_parts(host).map_or("default", |(_, ns)| ns);
    mesh.destination_rule_for(host, namespace)
}

fn policies(dr: &DestinationRule) -> impl Iterator<Item = &TrafficPolicy> {
    dr.spec.traffic_policy.iter().chain(dr.spec.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()))
}

fn service_config(mesh: &MeshConfig, host: &str) -> ServiceConfig {
    let routes = mesh_routes(mesh, host);
    let dr = destination_rule(mesh, host);
    let outlier_detection = dr.is_some_and(|dr| {
        policies(dr).any(|p| {
            p.outlier_detection.is_some() || p.port_level_settings.iter().any(|s| s.outlier_detection.is_some())
        })
    });
    let connection_limits = dr.is_some_and(|dr| {
        policies(dr).any(|p| {
            let pool = p.connection_pool.as_ref();
            pool.is_some_and(|pool| {
                pool.tcp.as_ref().is_some_and(|t| t.max_connections.is_some())
                    || pool
                        .http
                        .as_ref()
                        .is_some_and(|h| h.http1_max_pending_requests.is_some() || h.http2_max_requests.is_some())
            })
        })
    });
    ServiceConfig {
        routes: routes.len(),
        routes_with_timeout: routes.iter().filter(|r| r.timeout.is_some()).count(),
        routes_with_retries: routes.iter().filter(|r| retries_of(r) > 0).count(),
        outlier_detection,
        connection_limits,
        destination_rule: dr.map(|dr| format!("DestinationRule {}/{}", dr.metadata.ns(), dr.metadata.name)),
    }
}

/// Reads the evidence against the configuration; per-route evidence comes from the route analysis.
pub(super) fn analyze(
    mesh: &MeshConfig,
    evidence: &Evidence,
    routes: &RouteReport,
) -> (ResilienceReport, Vec<Finding>) {
    let Evidence { client, server_latency: latency, retries: retry_rows, bursts: burst_rows, .. } = evidence;
    let mut retries: BTreeMap<&str, Retries> = BTreeMap::new();
    for row in retry_rows {
        let total = retries.entry(row.destination_service.as_str()).or_default();
        total.requests += row.retries.requests;
        total.retried += row.retries.retried;
        total.max_tries = total.max_tries.max(row.retries.max_tries);
    }
    let bursts: BTreeMap<&str, Bursts> =
        burst_rows.iter().map(|r| (r.destination_service.as_str(), r.bursts)).collect();
    let mut hosts: BTreeSet<&str> = client.services.keys().map(String::as_str).collect();
    hosts.extend(retries.keys());
    hosts.extend(latency.keys().map(String::as_str));

    let mut report = ResilienceReport { services: Vec::new(), routes: Vec::new(), amplification: Vec::new() };
    let mut findings = Vec::new();
    for host in hosts {
        let (requests, failures) = client.services.get(host).copied().unwrap_or_default();
        let retries = retries.get(host).copied().unwrap_or_default();
        let configured = service_config(mesh, host);
        let (resource, origin) = service_resource(mesh, host);
        let mut gaps = Vec::new();
        if failures.timeouts > 0 && configured.routes_with_timeout == 0 {
            gaps.push("timeouts observed, no route timeout".to_owned());
            let message = format!(
                "{host}: {} requests timed out (UT or 504) in the window and no route to it sets a timeout.",
                failures.timeouts
            );
            findings.push(finding(&ML2007, resource.clone(), origin.clone(), message));
        }
        if failures.retries_exhausted > 0 {
            gaps.push("retries exhausted".to_owned());
            let message =
                format!("{host}: {} requests failed after exhausting their retries (URX).", failures.retries_exhausted);
            findings.push(finding(&ML2008, resource.clone(), origin.clone(), message));
        }
        if failures.overflows > 0 {
            gaps.push("circuit breaker overflow".to_owned());
            let message =
                format!("{host}: {} requests were rejected by connection-pool limits (UO).", failures.overflows);
            findings.push(finding(&ML2009, resource.clone(), origin.clone(), message));
        }
        let connection_failures = failures.connect_failures + failures.connection_terminations;
        if connection_failures > 0 && !configured.outlier_detection {
            gaps.push("connection failures, no outlier detection".to_owned());
            let message = format!(
                "{host}: {connection_failures} requests failed to connect or lost their connection (UF/UC) and no \
                 outlier detection is configured."
            );
            findings.push(finding(&ML2010, resource.clone(), origin.clone(), message));
        }
        report.services.push(ServiceResilience {
            service: host.to_owned(),
            requests,
            failures,
            bursts: bursts.get(host).copied().unwrap_or_default(),
            retries,
            retry_rate: if retries.requests == 0 {
                0.0
            } else {
                (retries.retried as f64 * 10_000.0 / retries.requests as f64).round() / 10_000.0
            },
            latency: latency.get(host).copied(),
            configured,
            gaps,
        });
    }

    let table = route_table(mesh);
    for usage in &routes.routes {
        if let RouteKind::Http { route, .. } = &table[usage.entry].kind {
            report.routes.push(RouteResilience {
                route: usage.route.clone(),
                timeout: route.timeout,
                retries: route.retries.clone(),
                requests: usage.requests,
                failures: usage.failures,
                latency: usage.latency,
            });
        }
    }
    findings.extend(non_idempotent_retries(mesh, retry_rows));
    report.amplification = amplification(mesh, &client.calls, &report.services);
    for chain in &report.amplification {
        let (Some(first), Some(last)) = (chain.chain.get(1), chain.chain.last()) else { continue };
        let (resource, origin) = service_resource(mesh, last);
        let message = format!(
            "Retries multiply along {}: up to {} tries reach {last} for one request to {first}.",
            chain.chain.join(" -> "),
            chain.worst_case_tries
        );
        findings.push(finding(&ML2011, resource, origin, message));
    }
    (report, findings)
}

/// ML2012: POST/PATCH requests the destination received more than once, with the route policy that retried
/// them.
fn non_idempotent_retries(mesh: &MeshConfig, retry_rows: &[RetryRow]) -> Vec<Finding> {
    let mut out = Vec::new();
    let table = route_table(mesh);
    for row in retry_rows {
        let Some(method) = row.method.as_deref().filter(|m| matches!(*m, "POST" | "PATCH")) else { continue };
        if row.retries.retried == 0 {
            continue;
        }
        let host = row.destination_service.as_str();
        let policy = table.iter().find_map(|entry| {
            let RouteKind::Http { route, .. } = &entry.kind else { return None };
            if !entry.gateways.iter().any(|g| g == "mesh")
                || !entry.hosts.iter().any(|h| meshlens_model::mesh::host_matches(h, host))
            {
                return None;
            }
            let retry_on = match &route.retries {
                Some(retry) if retry.attempts > 0 => {
                    retry.retry_on.clone().unwrap_or_else(|| ISTIO_DEFAULT_RETRY_ON.to_owned())
                }
                Some(_) => return None,
                None => ISTIO_DEFAULT_RETRY_ON.to_owned(),
            };
            let unsafe_conditions: Vec<&str> = retry_on
                .split(',')
                .map(str::trim)
                .filter(|c| UNSAFE_RETRY_ON.contains(c) || !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            (!unsafe_conditions.is_empty()).then(|| (entry.id.clone(), unsafe_conditions.join(",")))
        });
        let (route, conditions) =
            policy.unwrap_or_else(|| ("(Istio's default policy)".to_owned(), "retriable-status-codes".to_owned()));
        let (resource, origin) = service_resource(mesh, host);
        let message = format!(
            "{host}: {} {method} requests were received more than once (same x-request-id), retried by route \
             {route} on {conditions}.",
            row.retries.retried
        );
        out.push(finding(&ML2012, resource, origin, message));
    }
    out
}

/// Services a workload serves: those whose selector picks it in its namespace.
fn services_of(mesh: &MeshConfig, workload: &WorkloadRef) -> Vec<String> {
    mesh.services()
        .filter(|s| {
            s.metadata.ns() == workload.namespace
                && s.spec.selector.as_ref().is_some_and(|sel| !sel.is_empty() && labels_match(sel, &workload.labels))
        })
        .map(|s| format!("{}.{}.svc.cluster.local", s.metadata.name, s.metadata.ns()))
        .collect()
}

/// Chains of observed calls on which every hop has explicit retries, longest first. Istio's default retry
/// policy (2 retries on connection-level failures and 503) is left out: it applies to every hop alike and
/// is not something a route owner chose.
fn amplification(
    mesh: &MeshConfig,
    calls: &BTreeSet<(String, String, String)>,
    services: &[ServiceResilience],
) -> Vec<Amplification> {
    let workloads = mesh.workloads();
    let retries_into = |host: &str| mesh_routes(mesh, host).iter().map(|r| retries_of(r)).max().unwrap_or(0);
    // service -> services its workloads call.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (namespace, workload, destination) in calls {
        let caller = find_workload(&workloads, namespace, workload);
        for service in caller.map(|w| services_of(mesh, w)).unwrap_or_default() {
            graph.entry(service).or_default().insert(destination.clone());
        }
    }
    let mut chains: Vec<Amplification> = Vec::new();
    for (namespace, workload, destination) in calls {
        if retries_into(destination) == 0 {
            continue;
        }
        let start = vec![format!("{namespace}/{workload}"), destination.clone()];
        let mut stack = vec![start];
        while let Some(chain) = stack.pop() {
            let last = chain.last().cloned().unwrap_or_default();
            let next: Vec<&String> =
                graph.get(&last).into_iter().flatten().filter(|s| !chain.contains(s) && retries_into(s) > 0).collect();
            if next.is_empty() || chain.len() > 5 {
                if chain.len() >= 3 {
                    let attempts: Vec<u32> = chain[1..].iter().map(|s| retries_into(s)).collect();
                    let worst_case_tries = attempts.iter().map(|a| u64::from(*a) + 1).product();
                    let observed_max_tries =
                        services.iter().find(|s| s.service == last).map_or(0, |s| s.retries.max_tries);
                    chains.push(Amplification { chain, attempts, worst_case_tries, observed_max_tries });
                }
                continue;
            }
            for service in next {
                let mut longer = chain.clone();
                longer.push(service.clone());
                stack.push(longer);
            }
        }
    }
    chains.sort_by(|a, b| b.worst_case_tries.cmp(&a.worst_case_tries).then_with(|| a.chain.cmp(&b.chain)));
    chains.dedup();
    // A chain whose services end another chain's is the same amplification seen from further in.
    let services: Vec<Vec<String>> = chains.iter().map(|c| c.chain[1..].to_vec()).collect();
    let mut index = 0;
    chains.retain(|_| {
        let own = &services[index];
        index += 1;
        !services.iter().any(|other| other.len() > own.len() && other.ends_with(own))
    });
    chains
}
