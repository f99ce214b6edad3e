//! `GET /api/v1/resilience/gaps`: per destination service, what is configured (timeouts, retries,
//! outlier detection, connection limits) beside the failures, retries and latency observed, and the gaps
//! between the two; per route, its timeout and retry policy with what went through it; and call chains on
//! which every hop retries (retry amplification).

use super::routes::{Failures, Latency};
use super::{AnalysisRequest, ErrorResponses};
use crate::analysis::{host_namespace, resource_namespace};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{NamespaceDoc, PageDoc, WindowDoc, WindowInfo};
use crate::state::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use http::Uri;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// What the configuration says about a service's resilience.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResilienceConfig {
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
#[derive(Debug, Serialize, ToSchema)]
pub struct Retries {
    /// Distinct requests (by `x-request-id`) the destination logged.
    pub requests: u64,
    /// Of those, logged more than once (or with `attempts` > 1).
    pub retried: u64,
    /// Most tries of one request.
    pub max_tries: u64,
}

/// Short periods with many server errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bursts {
    /// 10-second buckets with at least 5 server errors.
    pub windows: u64,
    /// Most server errors in one bucket.
    pub worst: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceResilience {
    /// The service FQDN.
    pub service: String,
    /// Client-side requests to the service.
    pub requests: u64,
    pub failures: Failures,
    pub bursts: Bursts,
    pub retries: Retries,
    /// Share of the destination's distinct requests that were retried.
    pub retry_rate: f64,
    /// Server-side latency: the service's own response time.
    pub latency: Option<Latency>,
    pub configured: ResilienceConfig,
    /// Observed failures the configuration does nothing about, in words.
    pub gaps: Vec<String>,
}

/// A route's timeout and retry policy, with what went through it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteResilience {
    pub route: String,
    /// The configured timeout (`10s`, `250ms`), if any.
    pub timeout: Option<String>,
    /// The configured `retries` block, if any.
    pub retries: Option<RetryPolicy>,
    pub requests: u64,
    pub failures: Failures,
    /// Client-side latency through the route (includes retries).
    pub latency: Option<Latency>,
}

/// A route's `retries` block.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryPolicy {
    pub attempts: i32,
    pub per_try_timeout: Option<String>,
    pub retry_on: Option<String>,
}

/// A call chain on which every hop retries.
#[derive(Debug, Serialize, ToSchema)]
pub struct Amplification {
    /// The calling workload, then each service called.
    pub chain: Vec<String>,
    /// ResilienceConfig retries of each hop (the services after the first element).
    pub attempts: Vec<u32>,
    /// Product of (retries + 1) over the hops: the most tries the last service gets for one request.
    pub worst_case_tries: u64,
    /// Most tries of one request the last service actually logged.
    pub observed_max_tries: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GapsResponse {
    pub window: WindowInfo,
    pub namespace: Option<String>,
    /// Services, those with gaps first, then by requests.
    pub items: Vec<ServiceResilience>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
    /// Services (of all pages) with at least one gap.
    pub services_with_gaps: u64,
    pub routes: Vec<RouteResilience>,
    pub amplification: Vec<Amplification>,
}

/// Parameters of `/resilience/gaps` besides the window, namespace and page (OpenAPI only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct GapsDoc {
    /// `true`: only services with at least one gap.
    pub only_gaps: Option<bool>,
}

/// Resilience gaps in the window.
#[utoipa::path(
    get,
    path = "/api/v1/resilience/gaps",
    tag = "analyses",
    params(WindowDoc, NamespaceDoc, PageDoc, GapsDoc),
    responses((status = 200, description = "Resilience per service and route", body = GapsResponse), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn gaps(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<GapsResponse>, ApiError> {
    let request = AnalysisRequest::parse(&state, &caller, &uri, &["only_gaps"])?;
    let only_gaps = request.params.flag("only_gaps")?.unwrap_or(false);
    let analysis = request.run(&state).await?;
    let report = &analysis.traffic.resilience;
    let mut services: Vec<ServiceResilience> = report
        .services
        .iter()
        .filter(|s| s.requests > 0 || request.shows(host_namespace(&s.service)))
        .filter(|s| !only_gaps || !s.gaps.is_empty())
        .map(|s| ServiceResilience {
            service: s.service.clone(),
            requests: s.requests,
            failures: (&s.failures).into(),
            bursts: Bursts { windows: s.bursts.windows, worst: s.bursts.worst },
            retries: Retries {
                requests: s.retries.requests,
                retried: s.retries.retried,
                max_tries: s.retries.max_tries,
            },
            retry_rate: s.retry_rate,
            latency: s.latency.as_ref().map(Latency::from),
            configured: ResilienceConfig {
                routes: s.configured.routes,
                routes_with_timeout: s.configured.routes_with_timeout,
                routes_with_retries: s.configured.routes_with_retries,
                outlier_detection: s.configured.outlier_detection,
                connection_limits: s.configured.connection_limits,
                destination_rule: s.configured.destination_rule.clone(),
            },
            gaps: s.gaps.clone(),
        })
        .collect();
    services.sort_by(|a, b| {
        a.gaps
            .is_empty()
            .cmp(&b.gaps.is_empty())
            .then(b.requests.cmp(&a.requests))
            .then_with(|| a.service.cmp(&b.service))
    });
    let services_with_gaps = services.iter().filter(|s| !s.gaps.is_empty()).count() as u64;
    let routes = report
        .routes
        .iter()
        .filter(|r| r.requests > 0 || request.shows(resource_namespace(&r.route)))
        .map(|r| RouteResilience {
            route: r.route.clone(),
            timeout: r.timeout.as_ref().map(ToString::to_string),
            retries: r.retries.as_ref().map(|p| RetryPolicy {
                attempts: p.attempts,
                per_try_timeout: p.per_try_timeout.as_ref().map(ToString::to_string),
                retry_on: p.retry_on.clone(),
            }),
            requests: r.requests,
            failures: (&r.failures).into(),
            latency: r.latency.as_ref().map(Latency::from),
        })
        .collect();
    let amplification = report
        .amplification
        .iter()
        .map(|a| Amplification {
            chain: a.chain.clone(),
            attempts: a.attempts.clone(),
            worst_case_tries: a.worst_case_tries,
            observed_max_tries: a.observed_max_tries,
        })
        .collect();
    let (items, total) = request.page.slice(services);
    Ok(Json(GapsResponse {
        window: analysis.window.into(),
        namespace: request.namespace,
        items,
        total,
        limit: request.page.limit,
        offset: request.page.offset,
        services_with_gaps,
        routes,
        amplification,
    }))
}
