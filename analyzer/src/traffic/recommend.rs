//! Recommendations computed from observed traffic, each with its formula, the evidence it used, a
//! confidence from the sample size, and the resource to apply (YAML):
//!
//! - **timeout** for a route without one (or with one below the callee's p99.9): the callee's
//!   server-side p99.9 latency × margin (1.5 by default), rounded up to a readable value. p99.9 accepts one
//!   false timeout in a thousand requests; the margin absorbs drift between the window and tomorrow.
//! - **retries** for a route whose callee failed transiently (connection failures, server errors other
//!   than timeouts: retrying a slow service only adds load): 2 retries (at most 3 tries in all; 1 retry
//!   when more than 10% of requests fail, since retries then add more load than a retry budget allows),
//!   `perTryTimeout` from the callee's p99, and `retryOn` from the observed failures:
//!   `connect-failure,refused-stream` is always safe; `reset`, `gateway-error` and `5xx` only on routes
//!   whose requests are idempotent. POST and PATCH get `reset-before-request` instead of `reset` and never
//!   a status condition.
//! - **outlier detection** for a service with transient failures and none configured: `consecutive5xxErrors` is the
//!   smallest k for which a healthy endpoint (the median endpoint error rate p) fails k times in a row with
//!   probability pᵏ ≤ 10⁻⁴, kept within [3, 10]; Istio's interval and ejection time; at most half of the
//!   endpoints ejected.
//!
//! Several recommendations for one resource share one `patch`: the resource with all of them applied.

use super::resilience::{ResilienceReport, destination_rule};
use super::routes::{Failures, RouteKind, RouteReport, route_table};
use super::stats::{Confidence, Latency, round_up_readable_ms};
use super::{Evidence, TrafficOptions};
use meshlens_model::mesh::networking::{
    Destination, DestinationRule, DestinationRuleSpec, HttpRetry, HttpRoute, HttpRouteDestination, OutlierDetection,
    TrafficPolicy, VirtualService, VirtualServiceSpec,
};
use meshlens_model::mesh::{Duration, MeshConfig, ObjectMeta, resolve_host};
use meshlens_model::names::service_fqdn_parts;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a recommendation sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationKind {
    Timeout,
    Retries,
    OutlierDetection,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub kind: RecommendationKind,
    /// The route (`VirtualService ns/name #0`) or service the recommendation is for.
    pub target: String,
    /// The service whose observed behaviour it is computed from.
    pub service: String,
    /// The recommended settings, as they appear in the patch.
    pub value: serde_json::Value,
    /// How the value follows from the evidence, with the numbers filled in.
    pub formula: String,
    pub evidence: BTreeMap<&'static str, serde_json::Value>,
    pub confidence: Confidence,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `Kind ns/name` of the resource in `patch`.
    pub resource: String,
    /// The resource with every recommendation for it applied, ready for `kubectl apply`.
    pub patch: String,
}

/// Above this share of failing requests a route gets one retry, not two: each retry of a failed request is
/// extra load, and a retry budget (Envoy's default 20%, the SRE book's 10%) caps that.
const HIGH_FAILURE_RATE: f64 = 0.1;
/// Highest acceptable chance that a healthy endpoint trips outlier detection on a run of errors.
const FALSE_EJECTION: f64 = 1e-4;

/// Client calls and server errors at one endpoint (upstream host) of a service, as its callers saw them.
#[derive(Debug)]
pub(super) struct EndpointRow {
    pub(super) destination_service: String,
    pub(super) requests: u64,
    pub(super) errors: u64,
}

/// A resource being changed, and the recommendations that change it.
enum Change {
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
}

/// Computes the recommendations: the evidence comes from the route and resilience reports, the
/// server-side latency and the endpoints' errors.
pub(super) fn analyze(
    mesh: &MeshConfig,
    options: &TrafficOptions,
    evidence: &Evidence,
    routes: &RouteReport,
    resilience: &ResilienceReport,
) -> Vec<Recommendation> {
    let Evidence { server_latency: latency, endpoints, .. } = evidence;

    let mut out: Vec<(Recommendation, String)> = Vec::new();
    let mut changes: BTreeMap<String, Change> = BTreeMap::new();
    let table = route_table(mesh);
    for usage in &routes.routes {
        let RouteKind::Http { vs, index, route } = &table[usage.entry].kind else { continue };
        if usage.requests == 0 {
            continue;
        }
        let namespace = vs.metadata.ns();
        // The slowest callee decides; routes without server-side evidence get nothing.
        let Some((service, callee)) = route
            .route
            .iter()
            .filter_map(|d| {
                let host = resolve_host(&d.destination.host, namespace);
                latency.get(&host).map(|l| (host, *l))
            })
            .max_by(|a, b| a.1.p999_ms.total_cmp(&b.1.p999_ms))
        else {
            continue;
        };
        let key = format!("VirtualService {namespace}/{}", vs.metadata.name);
        let change = changes.entry(key.clone()).or_insert_with(|| Change::VirtualService(Box::new((*vs).clone())));
        let Change::VirtualService(patched) = change else { continue };
        let Some(patched_route) = patched.spec.http.get_mut(*index) else { continue };

        let timeout = timeout_for(&callee, options.timeout_margin);
        // A configured timeout is left alone unless it cuts off more than one response in a thousand:
        // moving it to a slightly different computed value would only churn configuration. `0s` disables
        // the timeout on purpose.
        let too_tight = |t: Duration| t != Duration::ZERO && t.as_millis_f64() < callee.p999_ms;
        if route.timeout.is_none_or(too_tight) {
            patched_route.timeout = Some(timeout.value);
            out.push((timeout.recommendation(&usage.route, &service, route.timeout), key.clone()));
        }

        let non_idempotent = usage.methods.keys().any(|m| m == "POST" || m == "PATCH");
        let failed = retryable(&usage.failures);
        let unsafe_now = route.retries.as_ref().is_some_and(|r| r.attempts > 0 && !safe_for(r, non_idempotent));
        if (failed > 0 && route.retries.is_none()) || (non_idempotent && unsafe_now) {
            let retry = retries_for(&callee, usage.requests, &usage.failures, non_idempotent);
            patched_route.retries = Some(retry.policy.clone());
            // The route timeout bounds all tries together (ML1003): make room for them.
            let tries = u32::try_from(retry.policy.attempts).unwrap_or(0) + 1;
            let mut recommendation = retry.recommendation(&usage.route, &service, route.retries.as_ref());
            if let (Some(per_try), Some(current)) = (retry.policy.per_try_timeout, patched_route.timeout)
                && let Some(needed) = per_try.as_std().checked_mul(tries).map(Duration::from)
                && current < needed
            {
                patched_route.timeout = Some(needed);
                let note = format!("route timeout raised from {current} to {needed} to fit {tries} tries");
                recommendation.note = Some(recommendation.note.map_or(note.clone(), |n| format!("{n}; {note}")));
            }
            out.push((recommendation, key.clone()));
        }
    }

    for service in &resilience.services {
        // Services no route configures get a timeout only when callers saw timeouts (ML2007): a new
        // VirtualService is a bigger step than a field on an existing one.
        if let Some(callee) =
            service.latency.filter(|_| service.configured.routes == 0 && service.failures.timeouts > 0)
        {
            let vs = new_virtual_service(&service.service);
            let key = format!("VirtualService {}/{}", vs.metadata.ns(), vs.metadata.name);
            let timeout = timeout_for(&callee, options.timeout_margin);
            let change = changes.entry(key.clone()).or_insert_with(|| Change::VirtualService(Box::new(vs)));
            if let Change::VirtualService(patched) = change
                && let Some(route) = patched.spec.http.first_mut()
            {
                route.timeout = Some(timeout.value);
            }
            out.push((timeout.recommendation(&format!("Service {}", service.service), &service.service, None), key));
        }
        let failed = retryable(&service.failures);
        if service.configured.outlier_detection || failed == 0 || service.requests == 0 {
            continue;
        }
        let rates: Vec<f64> = endpoints
            .iter()
            .filter(|e| e.destination_service == service.service && e.requests > 0)
            .map(|e| e.errors as f64 / e.requests as f64)
            .collect();
        let (recommendation, rule) = outlier_detection_for(mesh, &service.service, service.requests, rates);
        let key = format!("DestinationRule {}/{}", rule.metadata.ns(), rule.metadata.name);
        let change = changes.entry(key.clone()).or_insert_with(|| Change::DestinationRule(Box::new(rule.clone())));
        if let Change::DestinationRule(patched) = change {
            let policy = patched.spec.traffic_policy.get_or_insert_with(TrafficPolicy::default);
            policy.outlier_detection = rule.spec.traffic_policy.as_ref().and_then(|p| p.outlier_detection.clone());
        }
        out.push((recommendation, key));
    }

    let patches: BTreeMap<String, String> = changes.into_iter().map(|(key, change)| (key, render(&change))).collect();
    out.into_iter()
        .map(|(mut recommendation, key)| {
            recommendation.patch = patches.get(&key).cloned().unwrap_or_default();
            recommendation.resource = key;
            recommendation
        })
        .collect()
}

/// Failures that look transient: connection failures, and server errors other than timeouts. A timeout
/// says the callee is slow; retrying it, or ejecting endpoints for it, adds load where there is too much.
fn retryable(failures: &Failures) -> u64 {
    failures.connect_failures
        + failures.connection_terminations
        + failures.server_errors.saturating_sub(failures.timeouts)
}

fn ms(value: f64) -> serde_json::Value {
    serde_json::json!((value * 10.0).round() / 10.0)
}

struct TimeoutAdvice {
    value: Duration,
    callee: Latency,
    margin: f64,
}

fn timeout_for(callee: &Latency, margin: f64) -> TimeoutAdvice {
    let value = Duration::from_millis(round_up_readable_ms(callee.p999_ms * margin));
    TimeoutAdvice { value, callee: *callee, margin }
}

impl TimeoutAdvice {
    fn recommendation(&self, route: &str, service: &str, current: Option<Duration>) -> Recommendation {
        let raw = self.callee.p999_ms * self.margin;
        Recommendation {
            kind: RecommendationKind::Timeout,
            target: route.to_owned(),
            service: service.to_owned(),
            value: serde_json::json!({ "timeout": self.value.to_string() }),
            formula: format!(
                "timeout = round_up(p99.9 × {}) = round_up({} ms × {} = {:.1} ms) = {}",
                self.margin, self.callee.p999_ms, self.margin, raw, self.value
            ),
            evidence: BTreeMap::from([
                ("server_side_samples", serde_json::json!(self.callee.samples)),
                ("p99_ms", ms(self.callee.p99_ms)),
                ("p99.9_ms", ms(self.callee.p999_ms)),
                ("max_ms", ms(self.callee.max_ms)),
                ("configured_timeout", serde_json::json!(current.map(|t| t.to_string()))),
            ]),
            confidence: Confidence::for_quantile(self.callee.samples, 0.999),
            note: current.map(|t| format!("the configured timeout {t} is below what the callee needs")),
            resource: String::new(),
            patch: String::new(),
        }
    }
}

/// Whether a retry policy only retries failures that cannot have reached a non-idempotent handler.
fn safe_for(retry: &HttpRetry, non_idempotent: bool) -> bool {
    !non_idempotent
        || retry
            .retry_on_conditions()
            .iter()
            .all(|c| !super::resilience::UNSAFE_RETRY_ON.contains(c) && !c.bytes().all(|b| b.is_ascii_digit()))
}

struct RetryAdvice {
    policy: HttpRetry,
    callee: Latency,
    requests: u64,
    failure_rate: f64,
    non_idempotent: bool,
    failures: Failures,
}

fn retries_for(callee: &Latency, requests: u64, failures: &Failures, non_idempotent: bool) -> RetryAdvice {
    let failed = retryable(failures);
    let failure_rate = if requests == 0 { 0.0 } else { failed as f64 / requests as f64 };
    let attempts = if failure_rate > HIGH_FAILURE_RATE { 1 } else { 2 };
    let mut retry_on = vec!["connect-failure", "refused-stream"];
    if non_idempotent {
        retry_on.push("reset-before-request");
    } else {
        retry_on.push("reset");
        let other_5xx = failures.server_errors.saturating_sub(failures.gateway_errors);
        if other_5xx > 0 {
            retry_on.push("5xx");
        } else if failures.gateway_errors > 0 {
            retry_on.push("gateway-error");
        }
    }
    let policy = HttpRetry {
        attempts,
        per_try_timeout: Some(Duration::from_millis(round_up_readable_ms(callee.p99_ms))),
        retry_on: Some(retry_on.join(",")),
        retry_remote_localities: None,
    };
    RetryAdvice { policy, callee: *callee, requests, failure_rate, non_idempotent, failures: *failures }
}

impl RetryAdvice {
    fn recommendation(&self, route: &str, service: &str, current: Option<&HttpRetry>) -> Recommendation {
        let per_try = self.policy.per_try_timeout.map(|d| d.to_string()).unwrap_or_default();
        let retry_on = self.policy.retry_on.clone().unwrap_or_default();
        let mut notes = vec![
            "keep retries within a budget: at most 20% of requests (Envoy's default retry budget), ideally 10%"
                .to_owned(),
        ];
        if self.non_idempotent {
            notes.push(
                "the route carries POST/PATCH: only failures before the request reached the upstream are retried"
                    .to_owned(),
            );
        }
        if self.failure_rate > HIGH_FAILURE_RATE {
            notes.push(format!("{:.1}% of requests failed: one retry only", self.failure_rate * 100.0));
        }
        Recommendation {
            kind: RecommendationKind::Retries,
            target: route.to_owned(),
            service: service.to_owned(),
            value: serde_json::json!({ "attempts": self.policy.attempts, "perTryTimeout": per_try, "retryOn": retry_on }),
            formula: format!(
                "attempts = {} (≤ 3 tries in all); perTryTimeout = round_up(p99 = {} ms) = {per_try}; retryOn from the \
                 failures observed{}",
                self.policy.attempts,
                self.callee.p99_ms,
                if self.non_idempotent { " (non-idempotent: no status conditions)" } else { "" }
            ),
            evidence: BTreeMap::from([
                ("requests", serde_json::json!(self.requests)),
                ("failure_rate", serde_json::json!((self.failure_rate * 10_000.0).round() / 10_000.0)),
                ("failures", serde_json::to_value(self.failures).unwrap_or_default()),
                ("p99_ms", ms(self.callee.p99_ms)),
                ("server_side_samples", serde_json::json!(self.callee.samples)),
                ("configured_retry_on", serde_json::json!(current.and_then(|r| r.retry_on.clone()))),
            ]),
            confidence: Confidence::for_rate(self.requests).min(Confidence::for_quantile(self.callee.samples, 0.99)),
            note: Some(notes.join("; ")),
            resource: String::new(),
            patch: String::new(),
        }
    }
}

/// Smallest run of consecutive errors that a healthy endpoint (error rate `p`) produces with probability
/// at most [`FALSE_EJECTION`], within [3, 10].
fn consecutive_errors(p: f64) -> u32 {
    if p <= 0.0 || !p.is_finite() {
        return 3;
    }
    if p >= 1.0 {
        return 10;
    }
    let k = (FALSE_EJECTION.ln() / p.ln()).ceil();
    (k as u32).clamp(3, 10)
}

fn outlier_detection_for(
    mesh: &MeshConfig,
    host: &str,
    requests: u64,
    mut endpoint_error_rates: Vec<f64>,
) -> (Recommendation, DestinationRule) {
    endpoint_error_rates.sort_by(f64::total_cmp);
    let baseline = super::stats::percentile(&endpoint_error_rates, 0.5).unwrap_or(0.0);
    let k = consecutive_errors(baseline);
    let detection = OutlierDetection {
        consecutive_5xx_errors: Some(k),
        interval: Some(Duration::from_millis(10_000)),
        base_ejection_time: Some(Duration::from_millis(30_000)),
        max_ejection_percent: Some(50),
        ..Default::default()
    };
    let mut rule = destination_rule(mesh, host).cloned().unwrap_or_else(|| {
        let (name, namespace) = service_fqdn_parts(host).unwrap_or((host, "default"));
        DestinationRule {
            metadata: ObjectMeta { name: name.to_owned(), namespace: Some(namespace.to_owned()), ..Default::default() },
            spec: DestinationRuleSpec { host: host.to_owned(), ..Default::default() },
        }
    });
    rule.spec.traffic_policy.get_or_insert_with(TrafficPolicy::default).outlier_detection = Some(detection);
    let recommendation = Recommendation {
        kind: RecommendationKind::OutlierDetection,
        target: format!("Service {host}"),
        service: host.to_owned(),
        value: serde_json::json!({
            "consecutive5xxErrors": k, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50,
        }),
        formula: format!(
            "consecutive5xxErrors = smallest k with p^k ≤ 1e-4 for the median endpoint error rate p = {baseline:.4}, \
             within [3, 10] = {k}"
        ),
        evidence: BTreeMap::from([
            ("requests", serde_json::json!(requests)),
            ("endpoints_observed", serde_json::json!(endpoint_error_rates.len())),
            ("median_endpoint_error_rate", serde_json::json!((baseline * 10_000.0).round() / 10_000.0)),
        ]),
        confidence: Confidence::for_rate(requests),
        note: Some("maxEjectionPercent 50 keeps at least half of the endpoints serving".to_owned()),
        resource: String::new(),
        patch: String::new(),
    };
    (recommendation, rule)
}

/// A new VirtualService routing a service to itself, to give a service without routes a timeout.
fn new_virtual_service(host: &str) -> VirtualService {
    let (name, namespace) = service_fqdn_parts(host).unwrap_or((host, "default"));
    VirtualService {
        metadata: ObjectMeta { name: name.to_owned(), namespace: Some(namespace.to_owned()), ..Default::default() },
        spec: VirtualServiceSpec {
            hosts: vec![host.to_owned()],
            http: vec![HttpRoute {
                route: vec![HttpRouteDestination {
                    destination: Destination { host: host.to_owned(), ..Default::default() },
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    }
}

/// YAML of a changed resource: `apiVersion`, `kind`, `metadata` (name and namespace only, so that it
/// applies over the live object) and the spec without empty fields.
fn render(change: &Change) -> String {
    let (kind, meta, spec) = match change {
        Change::VirtualService(vs) => ("VirtualService", &vs.metadata, serde_json::to_value(&vs.spec)),
        Change::DestinationRule(dr) => ("DestinationRule", &dr.metadata, serde_json::to_value(&dr.spec)),
    };
    let mut spec = spec.unwrap_or_default();
    prune(&mut spec);
    let document = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": { "name": meta.name, "namespace": meta.ns() },
        "spec": spec,
    });
    yaml_serde::to_string(&document).unwrap_or_default()
}

/// Drops nulls and empty lists and maps: the model serializes every field, the API server needs none of
/// the defaults.
fn prune(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.values_mut().for_each(prune);
            map.retain(|_, v| !is_empty(v));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.is_empty(),
        serde_json::Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_errors_grow_with_the_baseline_error_rate() {
        assert_eq!(consecutive_errors(0.0), 3);
        assert_eq!(consecutive_errors(0.001), 3);
        assert_eq!(consecutive_errors(0.1), 4);
        assert_eq!(consecutive_errors(0.3), 8);
        assert_eq!(consecutive_errors(0.9), 10);
        assert_eq!(consecutive_errors(f64::NAN), 3);
    }

    #[test]
    fn timeouts_follow_the_callee_tail() {
        let callee =
            Latency { samples: 300, p50_ms: 40.0, p95_ms: 120.0, p99_ms: 300.0, p999_ms: 412.3, max_ms: 420.0 };
        let advice = timeout_for(&callee, 1.5);
        assert_eq!(advice.value.to_string(), "650ms");
        let recommendation = advice.recommendation("r", "s", None);
        assert_eq!(recommendation.confidence, Confidence::Low);
        assert!(recommendation.formula.contains("412.3 ms × 1.5 = 618.5 ms"), "{}", recommendation.formula);
    }

    #[test]
    fn retries_for_post_never_retry_on_status() {
        let callee = Latency { samples: 100, p50_ms: 10.0, p95_ms: 20.0, p99_ms: 33.0, p999_ms: 40.0, max_ms: 41.0 };
        let failures = Failures { server_errors: 5, gateway_errors: 5, ..Default::default() };
        let post = retries_for(&callee, 100, &failures, true);
        assert_eq!(post.policy.retry_on.as_deref(), Some("connect-failure,refused-stream,reset-before-request"));
        assert_eq!(post.policy.per_try_timeout.map(|d| d.to_string()).as_deref(), Some("40ms"));
        let get = retries_for(&callee, 100, &failures, false);
        assert_eq!(get.policy.retry_on.as_deref(), Some("connect-failure,refused-stream,reset,gateway-error"));
        assert_eq!(get.policy.attempts, 2);
        let failing = retries_for(&callee, 20, &failures, false);
        assert_eq!(failing.policy.attempts, 1, "25% failures get one retry");
    }

    #[test]
    fn rendered_patches_are_valid_istio_yaml_without_empty_fields() {
        let mut vs = new_virtual_service("reviews.shop.svc.cluster.local");
        vs.spec.http[0].timeout = Some(Duration::from_millis(650));
        let yaml = render(&Change::VirtualService(Box::new(vs)));
        assert!(yaml.starts_with("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"), "{yaml}");
        assert!(yaml.contains("timeout: 650ms"), "{yaml}");
        assert!(!yaml.contains("null") && !yaml.contains("[]"), "{yaml}");
        let mut report = meshlens_model::mesh::LoadReport::default();
        report.parse_str("patch.yaml", &yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.resources.len(), 1);
    }
}
