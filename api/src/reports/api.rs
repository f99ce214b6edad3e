//! `/api/v1/reports`: make a report now (`POST`, admin: it writes history), list the history (`GET`,
//! paginated, newest first) and fetch one stored report in any rendering (`GET /{id}?format=`).
//!
//! A namespace-scoped caller gets only its namespace's slice of every report ([`Report::slice`]): the
//! edges from or into its namespace, its findings, gaps and recommendations, and the trend recomputed
//! between slices. The policy verdict judges the whole mesh, so scoped callers see `passed: null`.
//! Unscoped callers may ask for a slice with `?namespace=`.

use super::history::{self, ReportMeta, StoredReport};
use super::model::Report;
use super::policy::Policy;
use super::render::{Format, render};
use super::trend::Trend;
use crate::analysis::window_until_now;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::v1::ErrorResponses;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::TimeDelta;
use http::{HeaderValue, StatusCode, header};
use meshlens_model::mesh::Duration;
use serde::{Deserialize, Serialize};

/// Most reports one page of the history lists.
pub const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/reports", get(list).post(create)).route("/reports/{id}", get(fetch))
}

/// Body of `POST /api/v1/reports`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    /// Length of the analyzed window, ending now (`30m`, `24h`); default 1h.
    #[serde(default)]
    pub window: Option<String>,
    /// The policy: an object with the policy file's fields, or the file's YAML text.
    #[serde(default)]
    pub policy: Option<serde_json::Value>,
}

/// A JSON request body, `None` when empty. Errors name the field path (`policy.max_findings`).
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map(Some).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.inner();
        match path.as_str() {
            "." => ApiError::BadRequest(format!("request body: {inner}")),
            path => ApiError::BadRequest(format!("request body: {path}: {inner}")),
        }
    })
}

/// `window` as a length of time.
pub fn parse_window(window: &str) -> Result<TimeDelta, ApiError> {
    let length: Duration = window.parse().map_err(|e| ApiError::BadRequest(format!("window: {e}")))?;
    let length = TimeDelta::from_std(length.as_std()).map_err(|_| ApiError::BadRequest("window: too long".into()))?;
    if length <= TimeDelta::zero() {
        return Err(ApiError::BadRequest("window: must be longer than zero".into()));
    }
    Ok(length)
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("making a report stores it: this needs an admin token".into()))
    }
}

/// The namespace whose slice the caller gets: its scope, or the one it asked for when unscoped.
fn slice_for(caller: &Caller, asked: Option<&str>) -> Result<Option<String>, ApiError> {
    match (&caller.namespace, asked) {
        (Some(scope), Some(asked)) if scope != asked => {
            Err(ApiError::Forbidden(format!("this token is scoped to namespace {scope:?}")))
        }
        (Some(scope), _) => Ok(Some(scope.clone())),
        (None, asked) => Ok(asked.map(str::to_owned)),
    }
}

/// A listing entry as `namespace`'s slice shows it.
fn meta_for(meta: ReportMeta, report: &Report, namespace: Option<&str>) -> ReportMeta {
    match namespace {
        None => meta,
        Some(ns) => ReportMeta { passed: None, summary: report.slice(ns).summary, ..meta },
    }
}

#[derive(Debug, Serialize)]
struct Created {
    #[serde(flatten)]
    meta: ReportMeta,
    /// Where the stored report is.
    location: String,
}

/// `POST /api/v1/reports`: analyzes the window now, stores the report and answers 201 with its summary.
#[utoipa::path(
    post,
    path = "/api/v1/reports",
    tag = "reports",
    request_body(
        content = Object,
        content_type = "application/json",
        description = "Optional: `{\"window\": \"24h\", \"policy\": {...} or \"YAML text\"}` (docs/reports.md)"
    ),
    responses(
        (status = 201, description = "The stored report's id, verdict and summary", body = Object),
        (status = 404, description = "Not found", body = ErrorBody),
        ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let request: CreateReport = json_body(&body)?.unwrap_or_default();
    let length = request.window.as_deref().map(parse_window).transpose()?;
    let policy =
        request.policy.as_ref().map(Policy::from_json).transpose().map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let catalog = state.store.catalog();
    let report = super::generate(&state, Some(catalog), window_until_now(length), policy.as_ref(), None).await?;
    let id = history::insert(catalog, &report, None).await?;
    let stored = history::get(catalog, id).await?.ok_or_else(|| ApiError::internal(format!("report {id} vanished")))?;
    let namespace = caller.namespace.as_deref();
    let location = format!("/api/v1/reports/{id}");
    let meta = meta_for(stored.meta, &stored.report, namespace);
    let mut response = (StatusCode::CREATED, Json(Created { meta, location: location.clone() })).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    offset: Option<u64>,
    namespace: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Page {
    reports: Vec<ReportMeta>,
    total: u64,
    limit: u32,
    offset: u64,
}

/// `GET /api/v1/reports?limit=&offset=`: the history, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/reports",
    tag = "reports",
    params(
        ("limit" = Option<u32>, Query, description = "Reports per page, 1 to 500 (default 50)"),
        ("offset" = Option<u64>, Query, description = "Reports to skip"),
        ("namespace" = Option<String>, Query, description = "Show this namespace's slice of each report")
    ),
    responses((status = 200, description = "`{reports, total, limit, offset}`, newest first", body = Object), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!("limit: must be between 1 and {MAX_PAGE}, found {limit}")));
    }
    let offset = query.offset.unwrap_or(0);
    let namespace = slice_for(&caller, query.namespace.as_deref())?;
    let catalog = state.store.catalog();
    let (metas, total) = history::list(catalog, limit, offset).await?;
    let reports = match namespace.as_deref() {
        None => metas,
        Some(ns) => {
            let mut sliced = Vec::with_capacity(metas.len());
            for meta in metas {
                let Some(stored) = history::get(catalog, meta.id).await? else { continue };
                sliced.push(meta_for(stored.meta, &stored.report, Some(ns)));
            }
            sliced
        }
    };
    Ok(Json(Page { reports, total, limit, offset }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchQuery {
    format: Option<String>,
    namespace: Option<String>,
}

/// The report a caller may see: the whole stored report, or `namespace`'s slice with its trend
/// recomputed against the previous report's slice.
pub async fn visible_report(
    catalog: &meshlens_store::Catalog,
    stored: StoredReport,
    namespace: Option<&str>,
) -> Result<Report, ApiError> {
    let Some(ns) = namespace else { return Ok(stored.report) };
    let mut slice = stored.report.slice(ns);
    if let Some(previous_id) = stored.report.trend.as_ref().map(|t| t.previous_id)
        && let Some(previous) = history::get(catalog, previous_id).await?
    {
        slice.trend = Some(Trend::between(previous_id, &previous.report.slice(ns), &slice));
    }
    Ok(slice)
}

/// `GET /api/v1/reports/{id}?format=json|html|md|csv`.
#[utoipa::path(
    get,
    path = "/api/v1/reports/{id}",
    tag = "reports",
    params(
        ("id" = i64, Path, description = "The report's id"),
        ("format" = Option<String>, Query, description = "`json` (default), `html`, `md` or `csv`"),
        ("namespace" = Option<String>, Query, description = "Show this namespace's slice")
    ),
    responses(
        (status = 200, description = "The report in the requested rendering", content(
            (Object = "application/json"),
            (String = "text/html; charset=utf-8"),
            (String = "text/markdown; charset=utf-8"),
            (String = "text/csv; charset=utf-8")
        )),
        (status = 404, description = "No such report", body = ErrorBody),
        ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    query: Result<Query<FetchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("report id: {}", e.body_text())))?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let format: Format = match query.format.as_deref() {
        None => Format::Json,
        Some(f) => f.parse().map_err(ApiError::BadRequest)?,
    };
    let namespace = slice_for(&caller, query.namespace.as_deref())?;
    let catalog = state.store.catalog();
    let stored = history::get(catalog, id).await?.ok_or_else(|| ApiError::NotFound(format!("no report {id}")))?;
    let report = visible_report(catalog, stored, namespace.as_deref()).await?;
    let body = render(&report, Some(id), format);
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}
