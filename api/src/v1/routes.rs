//! `GET /api/v1/routes`: every configured HTTP route (VirtualService and Ingress rules) with the requests it
//! served in the window — errors, failures by kind, latency, methods, weighted-split drift — and the
//! traffic no route matched.

use super::{AnalysisRequest, ErrorResponses};
use crate::analysis::{host_namespace, resource_namespace};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{NamespaceDoc, PageDoc, WindowDoc, WindowInfo};
use crate::state::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use http::Uri;
use meshlens_analyzer::traffic::routes::{self as analyzed, Failures as AnalyzedFailures};
use meshlens_analyzer::traffic::stats::Latency as AnalyzedLatency;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Failures observed on a set of requests, by kind.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Failures {
    /// Status 5xx, or no response at all.
    pub server_errors: u64,
    /// Of those, 502, 503 or 504.
    pub gateway_errors: u64,
    /// Envoy's upstream timeout (UT) or status 504.
    pub timeouts: u64,
    /// Retry limit reached (URX).
    pub retries_exhausted: u64,
    /// Rejected by circuit breaking (UO).
    pub overflows: u64,
    /// Upstream connection failure (UF).
    pub connect_failures: u64,
    /// Upstream connection terminated (UC).
    pub connection_terminations: u64,
}

impl From<&AnalyzedFailures> for Failures {
    fn from(f: &AnalyzedFailures) -> Self {
        Failures {
            server_errors: f.server_errors,
            gateway_errors: f.gateway_errors,
            timeouts: f.timeouts,
            retries_exhausted: f.retries_exhausted,
            overflows: f.overflows,
            connect_failures: f.connect_failures,
            connection_terminations: f.connection_terminations,
        }
    }
}

/// Latency percentiles of a sample, milliseconds.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl From<&AnalyzedLatency> for Latency {
    fn from(l: &AnalyzedLatency) -> Self {
        Latency {
            samples: l.samples,
            p50_ms: l.p50_ms,
            p95_ms: l.p95_ms,
            p99_ms: l.p99_ms,
            p999_ms: l.p999_ms,
            max_ms: l.max_ms,
        }
    }
}

/// A destination of a weighted route: configured weight against observed requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct SplitDestination {
    pub host: String,
    pub subset: Option<String>,
    pub weight: i32,
    pub observed: u64,
    /// Share of the requests that reached one of the route's destinations, percent.
    pub observed_percent: f64,
}

/// A weighted split: the chi-square test of observed requests against the weights.
#[derive(Debug, Serialize, ToSchema)]
pub struct Split {
    pub destinations: Vec<SplitDestination>,
    pub chi_square: f64,
    pub p_value: f64,
    /// Every destination expected at least 5 requests, the usual condition for the test to hold.
    pub enough_samples: bool,
    pub drift: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RouteUsage {
    /// `VirtualService ns/name "route-name"`, `VirtualService ns/name #2` or `Ingress ns/name host/path`.
    pub route: String,
    /// `Kind namespace/name` of the resource defining it.
    pub resource: String,
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub requests: u64,
    /// Requests attributed by the logged route name (the rest by evaluating the route's matches).
    pub matched_by_name: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub failures: Failures,
    pub latency: Option<Latency>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Requests by method.
    pub methods: BTreeMap<String, u64>,
    /// Requests to hosts this route serves, through any route.
    pub host_requests: u64,
    pub split: Option<Split>,
}

/// Requests a proxy found no route for (NR).
#[derive(Debug, Serialize, ToSchema)]
pub struct NoRoute {
    pub authority: String,
    pub source: String,
    pub requests: u64,
    /// The most frequent path.
    pub example_path: Option<String>,
}

/// Requests to a host with routes, none of which matches what the log shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unmatched {
    pub authority: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub requests: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoutesResponse {
    pub window: WindowInfo,
    pub namespace: Option<String>,
    /// Configured routes in route-table order (the order Istio evaluates them within a host).
    pub items: Vec<RouteUsage>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
    pub no_route: Vec<NoRoute>,
    /// The most frequent unmatched requests (at most 50).
    pub unmatched: Vec<Unmatched>,
    /// Requests to hosts that no route configures (Istio's default route).
    pub default_route_requests: u64,
}

/// Parameters of `/routes` besides the window, namespace and page (OpenAPI only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct RoutesDoc {
    /// `true`: only routes without requests in the window; `false`: only routes with requests.
    pub unused: Option<bool>,
}

fn route(r: &analyzed::RouteUsage) -> RouteUsage {
    RouteUsage {
        route: r.route.clone(),
        resource: r.resource.clone(),
        hosts: r.hosts.clone(),
        gateways: r.gateways.clone(),
        requests: r.requests,
        matched_by_name: r.matched_by_name,
        errors: r.errors,
        error_rate: r.error_rate,
        failures: (&r.failures).into(),
        latency: r.latency.as_ref().map(Latency::from),
        last_seen: r.last_seen,
        methods: r.methods.clone(),
        host_requests: r.host_requests,
        split: r.split.as_ref().map(|s| Split {
            destinations: s
                .destinations
                .iter()
                .map(|d| SplitDestination {
                    host: d.host.clone(),
                    subset: d.subset.clone(),
                    weight: d.weight,
                    observed: d.observed,
                    observed_percent: d.observed_percent,
                })
                .collect(),
            chi_square: s.chi_square,
            p_value: s.p_value,
            enough_samples: s.enough_samples,
            drift: s.drift,
        }),
    }
}

/// RouteUsage usage in the window.
#[utoipa::path(
    get,
    path = "/api/v1/routes",
    tag = "analyses",
    params(WindowDoc, NamespaceDoc, PageDoc, RoutesDoc),
    responses((status = 200, description = "RouteUsage usage", body = RoutesResponse), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn routes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<RoutesResponse>, ApiError> {
    let request = AnalysisRequest::parse(&state, &caller, &uri, &["unused"])?;
    let unused = request.params.flag("unused")?;
    let analysis = request.run(&state).await?;
    let report = &analysis.traffic.routes;
    // A scope sees the routes its traffic used, and the unused ones defined in or for its namespace.
    let visible = |r: &&analyzed::RouteUsage| {
        r.requests > 0
            || request.shows(resource_namespace(&r.resource))
            || r.hosts.iter().any(|h| request.shows(host_namespace(h)))
    };
    let routes: Vec<RouteUsage> = report
        .routes
        .iter()
        .filter(visible)
        .filter(|r| unused.is_none_or(|unused| unused == (r.requests == 0)))
        .map(route)
        .collect();
    let (items, total) = request.page.slice(routes);
    Ok(Json(RoutesResponse {
        window: analysis.window.into(),
        namespace: request.namespace,
        items,
        total,
        limit: request.page.limit,
        offset: request.page.offset,
        no_route: report
            .no_route
            .iter()
            .map(|n| NoRoute {
                authority: n.authority.clone(),
                source: n.source.clone(),
                requests: n.requests,
                example_path: n.example_path.clone(),
            })
            .collect(),
        unmatched: report
            .unmatched
            .iter()
            .map(|u| Unmatched {
                authority: u.authority.clone(),
                method: u.method.clone(),
                path: u.path.clone(),
                requests: u.requests,
            })
            .collect(),
        default_route_requests: report.default_route_requests,
    }))
}
