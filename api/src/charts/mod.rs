//! Charts of the telemetry, rendered on the server with plotters as SVG (default) or PNG
//! (`?format=png`) for the dashboard, reports and anyone with an `<img>` tag:
//!
//! - `GET /api/v1/charts/mtls-coverage`: share of mutually authenticated requests per time bucket, overall
//!   or one line per destination namespace (`by=namespace`);
//! - `GET /api/v1/charts/requests`: request rate and error rate per destination service;
//! - `GET /api/v1/charts/latency`: p50/p95/p99 latency over time, of one route (`route=`, the route name
//!   proxies log) or service, or of everything in scope;
//! - `GET /api/v1/charts/split-drift`: configured against observed shares of each destination of weighted
//!   routes, from the analyzer's route report.
//!
//! The time series are SQL over the store (`date_bin` buckets) run through the [`Sandbox`] in a session
//! scoped to the caller, so charts obey the same namespace scope and limits as `POST /api/v1/query`. A
//! request seen by both proxies is counted once: client and server records are paired by request id, as
//! the mTLS analysis pairs them. An empty window draws a chart saying so, not an error.

mod render;

pub use render::ImageFormat;

use crate::analysis::DEFAULT_WINDOW;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::sql::{self, Overflow, QueryResult, Sandbox, SqlLimits};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use http::{HeaderValue, StatusCode, header};
use meshlens_analyzer::traffic::{self, TrafficOptions, Window};
use render::{BarChart, BarGroup, Chart, LineChart, Panel, Series};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most lines in one panel; the busiest are drawn, and the title says how many there were.
const MAX_SERIES: usize = 8;
/// Most time buckets in one chart.
const MAX_BUCKETS: i64 = 1000;
/// Longest window a chart covers.
const MAX_WINDOW: TimeDelta = TimeDelta::days(31);
const DEFAULT_SIZE: (u32, u32) = (960, 480);
const SIZE_RANGE: std::ops::RangeInclusive<u32> = 100..=4000;
/// Steps a default bucket size is rounded up to, in seconds.
const NICE_STEPS: [i64; 14] = [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 10_800, 21_600, 43_200, 86_400];

/// Query parameters of every chart; each chart uses those its docs name and ignores none silently
/// (unknown parameters are refused).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChartParams {
    /// Length of the window ending at `end` (or now): `90s`, `15m`, `6h`, `7d`. Default 1h.
    pub window: Option<String>,
    /// Start of the window, RFC 3339; with `end`, instead of `window`.
    pub start: Option<String>,
    /// End of the window, RFC 3339. Default now.
    pub end: Option<String>,
    /// Bucket size of the time series, as `window`. Default: about 60 buckets per window.
    pub step: Option<String>,
    /// Only requests whose source or destination is in this namespace (a scoped token's own namespace
    /// applies anyway).
    pub namespace: Option<String>,
    /// Only requests to this destination service (FQDN, or its first label).
    pub service: Option<String>,
    /// Time series: only requests with this route name as proxies log it (`route_name`); `split-drift`:
    /// the route id of the route report, or its VirtualService's name.
    pub route: Option<String>,
    /// `mtls-coverage`: `namespace` for one line per destination namespace.
    pub by: Option<String>,
    /// `svg` (default) or `png`.
    pub format: Option<ImageFormat>,
    /// Image width in pixels, 100 to 4000. Default 960.
    pub width: Option<u32>,
    /// Image height in pixels, 100 to 4000. Default 480.
    pub height: Option<u32>,
}

/// A chart request with its parameters checked.
#[derive(Debug, Clone)]
struct Request {
    window: Window,
    step_seconds: i64,
    namespace: Option<String>,
    service: Option<String>,
    route: Option<String>,
    by_namespace: bool,
    format: ImageFormat,
    width: u32,
    height: u32,
}

/// Limits of chart queries: like the SQL endpoint's, with room for one row per bucket and series.
fn chart_limits() -> SqlLimits {
    SqlLimits { timeout: std::time::Duration::from_secs(30), max_rows: 200_000, ..SqlLimits::default() }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/charts/mtls-coverage", get(mtls_coverage))
        .route("/charts/requests", get(requests))
        .route("/charts/latency", get(latency))
        .route("/charts/split-drift", get(split_drift))
        .layer(Extension(Arc::new(Sandbox::new(chart_limits()))))
}

/// A duration like `90s`, `15m`, `6h`, `7d`.
fn parse_duration(name: &str, text: &str) -> Result<TimeDelta, ApiError> {
    let bad = || ApiError::BadRequest(format!("{name}: `{text}` is not a duration like 90s, 15m, 6h or 7d"));
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let delta = number.checked_mul(seconds).and_then(TimeDelta::try_seconds).ok_or_else(bad)?;
    if delta <= TimeDelta::zero() {
        return Err(ApiError::BadRequest(format!("{name}: must be longer than zero, got `{text}`")));
    }
    Ok(delta)
}

fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| ApiError::BadRequest(format!("{name}: `{text}` is not an RFC 3339 time ({e})")))
}

impl Request {
    fn new(params: ChartParams, caller: &Caller) -> Result<Request, ApiError> {
        let end = params.end.as_deref().map(|t| parse_time("end", t)).transpose()?.unwrap_or_else(Utc::now);
        let start = match (&params.start, &params.window) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest("give either start or window, not both".into()));
            }
            (Some(start), None) => parse_time("start", start)?,
            (None, window) => {
                let length = window.as_deref().map(|w| parse_duration("window", w)).transpose()?;
                end.checked_sub_signed(length.unwrap_or(DEFAULT_WINDOW)).unwrap_or(DateTime::UNIX_EPOCH)
            }
        };
        if start >= end {
            return Err(ApiError::BadRequest(format!("the window is empty: start {start} is not before end {end}")));
        }
        if end - start > MAX_WINDOW {
            return Err(ApiError::BadRequest(format!("the window is longer than {} days", MAX_WINDOW.num_days())));
        }
        let span = (end - start).num_seconds().max(1);
        let step_seconds = match &params.step {
            Some(step) => parse_duration("step", step)?.num_seconds().max(1),
            None => NICE_STEPS.iter().copied().find(|s| span / s <= 60).unwrap_or(86_400),
        };
        if span / step_seconds > MAX_BUCKETS {
            return Err(ApiError::BadRequest(format!(
                "step {step_seconds}s makes {} buckets over the window; at most {MAX_BUCKETS} are drawn",
                span / step_seconds
            )));
        }
        let namespace = match (&caller.namespace, params.namespace) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(ApiError::Forbidden(format!(
                    "this token is scoped to namespace `{own}` and cannot chart `{asked}`"
                )));
            }
            (Some(own), _) => Some(own.clone()),
            (None, asked) => asked.filter(|n| !n.is_empty()),
        };
        let by_namespace = match params.by.as_deref() {
            None => false,
            Some("namespace") => true,
            Some(other) => return Err(ApiError::BadRequest(format!("by: `{other}` is not `namespace`"))),
        };
        let (width, height) = (params.width.unwrap_or(DEFAULT_SIZE.0), params.height.unwrap_or(DEFAULT_SIZE.1));
        for (name, value) in [("width", width), ("height", height)] {
            if !SIZE_RANGE.contains(&value) {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be between {} and {} pixels, got {value}",
                    SIZE_RANGE.start(),
                    SIZE_RANGE.end()
                )));
            }
        }
        Ok(Request {
            window: Window { start, end },
            step_seconds,
            namespace,
            service: params.service.filter(|s| !s.is_empty()),
            route: params.route.filter(|s| !s.is_empty()),
            by_namespace,
            format: params.format.unwrap_or(ImageFormat::Svg),
            width,
            height,
        })
    }

    /// What the chart covers, for its title: the filters and the window.
    fn scope_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ns) = &self.namespace {
            parts.push(format!("namespace {ns}"));
        }
        if let Some(service) = &self.service {
            parts.push(format!("service {service}"));
        }
        if let Some(route) = &self.route {
            parts.push(format!("route {route}"));
        }
        let minutes = (self.window.end - self.window.start).num_minutes();
        parts.push(if minutes >= 120 { format!("last {}h", minutes / 60) } else { format!("last {minutes}m") });
        parts.join(", ")
    }
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// SQL of the requests in the window, one row per request: client and server records of the same request
/// (same request id and service) are paired, preferring what the server saw for mTLS and what the client
/// saw for status and latency. Filters of `request` apply.
fn paired_sql(request: &Request, select: &str, group_by: &str) -> String {
    let window = format!(
        "timestamp >= {} AND timestamp < {}",
        literal(&rfc3339(request.window.start)),
        literal(&rfc3339(request.window.end))
    );
    let columns = "timestamp, request_id, source_namespace, destination_service, destination_namespace, route_name, \
                   status, duration_ms, mtls";
    let mut filters = vec!["TRUE".to_owned()];
    if let Some(ns) = &request.namespace {
        filters.push(format!("(source_namespace = {0} OR destination_namespace = {0})", literal(ns)));
    }
    if let Some(route) = &request.route {
        filters.push(format!("route_name = {}", literal(route)));
    }
    if let Some(service) = &request.service {
        filters.push(format!(
            "(destination_service = {} OR starts_with(destination_service, {}))",
            literal(service),
            literal(&format!("{service}."))
        ));
    }
    format!(
        "WITH client AS (SELECT {columns} FROM requests WHERE {window} AND direction <> 'inbound'),
              server AS (SELECT {columns} FROM requests WHERE {window} AND direction = 'inbound'),
              paired AS (
                SELECT COALESCE(client.timestamp, server.timestamp) AS timestamp,
                       COALESCE(client.source_namespace, server.source_namespace) AS source_namespace,
                       COALESCE(server.destination_service, client.destination_service) AS destination_service,
                       COALESCE(server.destination_namespace, client.destination_namespace) AS destination_namespace,
                       COALESCE(client.route_name, server.route_name) AS route_name,
                       COALESCE(client.status, server.status) AS status,
                       COALESCE(client.duration_ms, server.duration_ms) AS duration_ms,
                       COALESCE(NULLIF(server.mtls, 'unknown'), NULLIF(client.mtls, 'unknown'), 'unknown') AS mtls
                FROM server FULL OUTER JOIN client
                  ON server.request_id = client.request_id AND server.destination_service = client.destination_service)
         SELECT to_unixtime(date_bin(INTERVAL '{step} seconds', timestamp, TIMESTAMP '1970-01-01T00:00:00Z')) AS t,
                {select}
         FROM paired WHERE {filters}
         GROUP BY {group_by} ORDER BY 1",
        step = request.step_seconds,
        filters = filters.join(" AND "),
    )
}

/// Decodes each row of `result` (by column name) into a `T`.
fn decode<T: DeserializeOwned>(result: &QueryResult) -> Result<Vec<T>, ApiError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in &result.batches {
        writer.write(batch).map_err(ApiError::internal)?;
    }
    writer.finish().map_err(ApiError::internal)?;
    let json = writer.into_inner();
    if json.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&json).map_err(ApiError::internal)
}

async fn run<T: DeserializeOwned>(
    state: &AppState,
    sandbox: &Sandbox,
    caller: &Caller,
    sql: &str,
) -> Result<Vec<T>, ApiError> {
    let result = sandbox
        .run(&state.store, state.executor(), caller.namespace.as_deref(), sql, sandbox.limits(), Overflow::Refuse)
        .await?;
    decode(&result)
}

/// The `MAX_SERIES` series with the largest `weight`, largest first; and how many there were.
fn busiest(series: BTreeMap<String, (f64, Vec<(i64, f64)>)>) -> (Vec<Series>, usize) {
    let total = series.len();
    let mut ranked: Vec<_> = series.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    let kept = ranked.into_iter().take(MAX_SERIES).map(|(name, (_, points))| Series { name, points }).collect();
    (kept, total)
}

fn with_count(title: String, kept: usize, total: usize, what: &str) -> String {
    if total > kept { format!("{title} (busiest {kept} of {total} {what})") } else { title }
}

/// `service.namespace` of a destination FQDN, for legends.
fn short_service(fqdn: &str) -> String {
    fqdn.strip_suffix(".svc.cluster.local").unwrap_or(fqdn).to_owned()
}

fn image(request: &Request, chart: &Chart) -> Result<Response, ApiError> {
    let body = render::render(chart, request.format, request.width, request.height)?;
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(request.format.content_type()));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn params(params: Result<Query<ChartParams>, QueryRejection>, caller: &Caller) -> Result<Request, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Request::new(params, caller)
}

#[derive(Debug, Deserialize)]
struct MtlsRow {
    t: i64,
    series: String,
    mutual: u64,
    total: u64,
}

/// `GET /api/v1/charts/mtls-coverage`.
#[utoipa::path(
    get,
    path = "/api/v1/charts/mtls-coverage",
    tag = "charts",
    description = "mTLS coverage over time: the share of mutual TLS among requests whose mTLS is known, overall or per destination namespace (`by=namespace`). SVG by default, PNG with `format=png`; fonts are embedded.",
    params(ChartParams),
    responses(
        (status = 200, description = "The chart", content((String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 422, description = "The chart's query went over a limit", body = crate::ErrorBody),
        crate::v1::ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn mtls_coverage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(sandbox): Extension<Arc<Sandbox>>,
    query: Result<Query<ChartParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = params(query, &caller)?;
    let series = if request.by_namespace { "COALESCE(destination_namespace, '(unknown)')" } else { "'all requests'" };
    let sql = paired_sql(
        &request,
        &format!("{series} AS series, SUM(CASE WHEN mtls = 'mutual' THEN 1 ELSE 0 END) AS mutual, COUNT(*) AS total"),
        "1, 2",
    );
    let rows: Vec<MtlsRow> = run(&state, &sandbox, &caller, &sql).await?;
    let mut by_series: BTreeMap<String, (f64, Vec<(i64, f64)>)> = BTreeMap::new();
    for row in rows.into_iter().filter(|r| r.total > 0) {
        let entry = by_series.entry(row.series).or_default();
        entry.0 += row.total as f64;
        entry.1.push((row.t, 100.0 * row.mutual as f64 / row.total as f64));
    }
    let (series, total) = busiest(by_series);
    let title = with_count(format!("mTLS coverage — {}", request.scope_text()), series.len(), total, "namespaces");
    let chart = Chart::Lines(LineChart {
        title,
        start: request.window.start,
        end: request.window.end,
        panels: vec![Panel {
            title: format!("share of requests mutually authenticated, per {}s", request.step_seconds),
            y_label: "mutual TLS (%)".into(),
            y_max: Some(100.0),
            series,
        }],
    });
    image(&request, &chart)
}

#[derive(Debug, Deserialize)]
struct RateRow {
    t: i64,
    series: String,
    total: u64,
    errors: u64,
}

/// `GET /api/v1/charts/requests`.
#[utoipa::path(
    get,
    path = "/api/v1/charts/requests",
    tag = "charts",
    description = "Request rate and error rate over time per destination service. SVG by default, PNG with `format=png`; fonts are embedded.",
    params(ChartParams),
    responses(
        (status = 200, description = "The chart", content((String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 422, description = "The chart's query went over a limit", body = crate::ErrorBody),
        crate::v1::ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn requests(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(sandbox): Extension<Arc<Sandbox>>,
    query: Result<Query<ChartParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = params(query, &caller)?;
    let sql = paired_sql(
        &request,
        "COALESCE(destination_service, '(unknown)') AS series, COUNT(*) AS total,
         SUM(CASE WHEN status IS NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors",
        "1, 2",
    );
    let rows: Vec<RateRow> = run(&state, &sandbox, &caller, &sql).await?;
    let step = request.step_seconds as f64;
    let mut rates: BTreeMap<String, (f64, Vec<(i64, f64)>)> = BTreeMap::new();
    let mut errors: BTreeMap<String, (f64, Vec<(i64, f64)>)> = BTreeMap::new();
    for row in rows.into_iter().filter(|r| r.total > 0) {
        let name = short_service(&row.series);
        let rate = rates.entry(name.clone()).or_default();
        rate.0 += row.total as f64;
        rate.1.push((row.t, row.total as f64 / step));
        let error = errors.entry(name).or_default();
        error.0 += row.total as f64;
        error.1.push((row.t, 100.0 * row.errors as f64 / row.total as f64));
    }
    let (rate_series, total) = busiest(rates);
    let (error_series, _) = busiest(errors);
    let title = with_count(format!("Requests — {}", request.scope_text()), rate_series.len(), total, "services");
    let chart = Chart::Lines(LineChart {
        title,
        start: request.window.start,
        end: request.window.end,
        panels: vec![
            Panel {
                title: format!("request rate, per {}s bucket", request.step_seconds),
                y_label: "requests/s".into(),
                y_max: None,
                series: rate_series,
            },
            Panel {
                title: "error rate (5xx or no response)".into(),
                y_label: "errors (%)".into(),
                y_max: Some(100.0),
                series: error_series,
            },
        ],
    });
    image(&request, &chart)
}

#[derive(Debug, Deserialize)]
struct LatencyRow {
    t: i64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// `GET /api/v1/charts/latency`.
#[utoipa::path(
    get,
    path = "/api/v1/charts/latency",
    tag = "charts",
    description = "Latency percentiles (p50, p95, p99) over time per route. SVG by default, PNG with `format=png`; fonts are embedded.",
    params(ChartParams),
    responses(
        (status = 200, description = "The chart", content((String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 422, description = "The chart's query went over a limit", body = crate::ErrorBody),
        crate::v1::ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn latency(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(sandbox): Extension<Arc<Sandbox>>,
    query: Result<Query<ChartParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = params(query, &caller)?;
    let sql = paired_sql(
        &request,
        "approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(duration_ms AS DOUBLE)) AS p50,
         approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY CAST(duration_ms AS DOUBLE)) AS p95,
         approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY CAST(duration_ms AS DOUBLE)) AS p99",
        "1",
    );
    let rows: Vec<LatencyRow> = run(&state, &sandbox, &caller, &sql).await?;
    let pick = |f: fn(&LatencyRow) -> Option<f64>| rows.iter().filter_map(|r| f(r).map(|v| (r.t, v))).collect();
    let series = vec![
        Series { name: "p50".into(), points: pick(|r| r.p50) },
        Series { name: "p95".into(), points: pick(|r| r.p95) },
        Series { name: "p99".into(), points: pick(|r| r.p99) },
    ];
    let chart = Chart::Lines(LineChart {
        title: format!("Latency — {}", request.scope_text()),
        start: request.window.start,
        end: request.window.end,
        panels: vec![Panel {
            title: format!("percentiles of request duration, per {}s bucket", request.step_seconds),
            y_label: "duration (ms)".into(),
            y_max: None,
            series,
        }],
    });
    image(&request, &chart)
}

/// The namespace of a `Kind ns/name` resource reference.
fn resource_namespace(resource: &str) -> Option<&str> {
    resource.split_once(' ').and_then(|(_, name)| name.split_once('/')).map(|(ns, _)| ns)
}

/// `GET /api/v1/charts/split-drift`.
#[utoipa::path(
    get,
    path = "/api/v1/charts/split-drift",
    tag = "charts",
    description = "Configured weights vs observed shares of each weighted route split. SVG by default, PNG with `format=png`; fonts are embedded.",
    params(ChartParams),
    responses(
        (status = 200, description = "The chart", content((String = "image/svg+xml"), (Vec<u8> = "image/png"))),
        (status = 422, description = "The chart's query went over a limit", body = crate::ErrorBody),
        crate::v1::ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn split_drift(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(sandbox): Extension<Arc<Sandbox>>,
    query: Result<Query<ChartParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = params(query, &caller)?;
    let limits = sandbox.limits();
    let ctx = sql::session(&state.store, caller.namespace.as_deref(), limits).await?;
    let mesh = state.mesh();
    let options = TrafficOptions::default();
    let analysis = traffic::analyze(&ctx, &mesh.mesh, request.window, &options);
    let report = match tokio::time::timeout(limits.timeout, analysis).await {
        Ok(result) => result.map_err(ApiError::internal)?,
        Err(_) => {
            return Err(ApiError::LimitExceeded(format!(
                "the route analysis ran longer than {} s and was cancelled",
                limits.timeout.as_secs()
            )));
        }
    };
    let mut groups = Vec::new();
    for usage in &report.routes.routes {
        let Some(split) = &usage.split else { continue };
        if let Some(ns) = &request.namespace
            && resource_namespace(&usage.resource) != Some(ns.as_str())
        {
            continue;
        }
        if let Some(route) = &request.route
            && usage.route != *route
            && !usage.resource.ends_with(&format!("/{route}"))
        {
            continue;
        }
        let weights: f64 = split.destinations.iter().map(|d| f64::from(d.weight.max(0))).sum();
        for destination in &split.destinations {
            let target = destination.subset.clone().unwrap_or_else(|| short_service(&destination.host));
            let drift = if split.drift { format!(" (drift, p={:.1e})", split.p_value) } else { String::new() };
            groups.push(BarGroup {
                label: format!("{} → {target}{drift}", usage.route),
                values: vec![
                    if weights > 0.0 { 100.0 * f64::from(destination.weight.max(0)) / weights } else { 0.0 },
                    destination.observed_percent,
                ],
            });
        }
    }
    let chart = Chart::Bars(BarChart {
        title: format!("Split drift — {}", request.scope_text()),
        y_label: "share of the route's requests (%)".into(),
        bars: vec!["configured weight".into(), "observed".into()],
        groups,
        y_max: 100.0,
    });
    image(&request, &chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_why() {
        assert_eq!(parse_duration("window", "90s").unwrap(), TimeDelta::seconds(90));
        assert_eq!(parse_duration("window", "6h").unwrap(), TimeDelta::hours(6));
        assert_eq!(parse_duration("window", "7d").unwrap(), TimeDelta::days(7));
        for bad in ["", "h", "5", "5y", "-5m", "0m", "99999999999999999999d"] {
            assert!(parse_duration("window", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_steps_give_at_most_sixty_buckets() {
        let caller = Caller::unrestricted();
        for (window, step) in [("1h", 60), ("15m", 30), ("24h", 1800), ("7d", 10_800), ("90s", 5)] {
            let params = ChartParams { window: Some(window.into()), ..ChartParams::default() };
            assert_eq!(Request::new(params, &caller).unwrap().step_seconds, step, "{window}");
        }
        let params = ChartParams { window: Some("7d".into()), step: Some("1m".into()), ..ChartParams::default() };
        assert!(Request::new(params, &caller).unwrap_err().to_string().contains("at most 1000"));
    }

    #[test]
    fn literals_escape_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn resource_namespaces() {
        assert_eq!(resource_namespace("VirtualService shop/reviews"), Some("shop"));
        assert_eq!(resource_namespace("nonsense"), None);
    }
}
