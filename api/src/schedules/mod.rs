//! Report schedules: a name, a cron expression or an interval, a window, an optional policy, the
//! renderings to send and a webhook URL, stored in SQL ([`db`]). The [`Ticker`] in `meshlens serve` makes
//! each due report, stores it with the history, and POSTs it to the webhook with retries and exponential
//! backoff; the delivery status (attempts, last error, delivered at) is kept in SQL and shown by the API.
//!
//! `GET/POST /api/v1/schedules`, `GET/DELETE /api/v1/schedules/{id}` ([`routes`]) need an admin token:
//! schedules write history, and webhook URLs often carry credentials.

pub mod db;
pub mod ticker;
pub mod timing;
pub mod webhook;

pub use ticker::{Ticker, TickerOptions};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::reports::history::{StoredReport, from_micros};
use crate::reports::{Format, Policy, render};
use crate::state::AppState;
use crate::v1::ErrorResponses;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use db::{Delivery, NewSchedule, ScheduleRow};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use timing::Timing;

/// A schedule as the ticker uses it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub timing: Timing,
    pub window: TimeDelta,
    pub policy: Option<Policy>,
    pub formats: Vec<Format>,
}

impl Schedule {
    /// Reads a stored row (validated when it was created).
    pub fn from_row(row: &ScheduleRow) -> Result<Schedule, String> {
        let timing = match (&row.cron, row.interval_seconds) {
            (Some(cron), _) => Timing::cron(cron)?,
            (None, Some(seconds)) => Timing::Interval(TimeDelta::seconds(seconds)),
            (None, None) => return Err("neither cron nor interval".into()),
        };
        let policy =
            row.policy.as_deref().map(|text| Policy::parse("policy", text)).transpose().map_err(|e| e.to_string())?;
        let formats = serde_json::from_str(&row.formats).map_err(|e| format!("formats: {e}"))?;
        Ok(Schedule { timing, window: TimeDelta::seconds(row.window_seconds), policy, formats })
    }
}

/// The webhook payload of a stored report (docs/reports.md, "Webhook payload").
pub fn payload(delivery_id: i64, schedule: &ScheduleRow, stored: &StoredReport, formats: &[Format]) -> Vec<u8> {
    let id = stored.meta.id;
    let mut renderings = serde_json::Map::new();
    for format in formats {
        let rendering = match format {
            Format::Json => serde_json::to_value(&stored.report).unwrap_or_default(),
            other => serde_json::Value::String(render(&stored.report, Some(id), *other)),
        };
        renderings.insert(format.as_str().to_owned(), rendering);
    }
    let body = json!({
        "event": "report",
        "delivery_id": delivery_id,
        "schedule": { "id": schedule.id, "name": schedule.name },
        "report": {
            "id": id,
            "created_at": stored.meta.created_at,
            "window": stored.meta.window,
            "config_hash": stored.meta.config_hash,
            "passed": stored.meta.passed,
            "summary": stored.meta.summary,
            "url": format!("/api/v1/reports/{id}"),
        },
        "renderings": renderings,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/schedules", get(list).post(create)).route("/schedules/{id}", get(fetch).delete(remove))
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.role == Role::Admin { Ok(()) } else { Err(ApiError::Forbidden("schedules need an admin token".into())) }
}

/// Body of `POST /api/v1/schedules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique; letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Cron expression (UTC; 5 fields, or 6 with seconds first). Exactly one of `cron` and `interval`.
    #[serde(default)]
    pub cron: Option<String>,
    /// Fixed interval (`30m`, `24h`); the first run is one interval after creation.
    #[serde(default)]
    pub interval: Option<String>,
    /// Length of the analyzed window, ending at the run time. Default `24h`.
    #[serde(default)]
    pub window: Option<String>,
    /// The policy: an object with the policy file's fields, or its YAML text.
    #[serde(default)]
    pub policy: Option<serde_json::Value>,
    /// Renderings included in the webhook payload. Default `["json"]`.
    #[serde(default)]
    pub formats: Option<Vec<String>>,
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub id: i64,
    pub name: String,
    pub cron: Option<String>,
    pub interval_seconds: Option<i64>,
    pub window_seconds: i64,
    pub policy: Option<Policy>,
    pub formats: Vec<Format>,
    pub webhook_url: Option<String>,
    pub next_run: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_report_id: Option<i64>,
    /// Why the last run made no report.
    pub last_error: Option<String>,
    /// The latest deliveries, newest first.
    pub deliveries: Vec<Delivery>,
}

fn view(row: ScheduleRow, deliveries: Vec<Delivery>) -> ScheduleView {
    let parsed = Schedule::from_row(&row).ok();
    ScheduleView {
        id: row.id,
        name: row.name,
        cron: row.cron,
        interval_seconds: row.interval_seconds,
        window_seconds: row.window_seconds,
        policy: parsed.as_ref().and_then(|s| s.policy.clone()),
        formats: parsed.map(|s| s.formats).unwrap_or_default(),
        webhook_url: row.webhook_url,
        next_run: from_micros(row.next_run),
        created_at: from_micros(row.created_at),
        last_run_at: row.last_run_at.map(from_micros),
        last_report_id: row.last_report_id,
        last_error: row.last_error,
        deliveries,
    }
}

/// Longest schedule name.
const MAX_NAME: usize = 100;
/// Shortest interval: the ticker polls every second.
const MIN_INTERVAL: TimeDelta = TimeDelta::seconds(1);

fn seconds_of(field: &str, text: &str) -> Result<i64, ApiError> {
    let length = crate::reports::parse_window(text)
        .map_err(|e| ApiError::BadRequest(e.to_string().replacen("window", field, 1)))?;
    if length < MIN_INTERVAL {
        return Err(ApiError::BadRequest(format!("{field}: must be at least 1s")));
    }
    Ok(length.num_seconds())
}

/// Checks a creation request and turns it into a row.
pub fn validate(request: CreateSchedule, now: DateTime<Utc>) -> Result<NewSchedule, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let name = request.name.trim().to_owned();
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad(format!("name: 1 to {MAX_NAME} letters, digits, '.', '_' or '-', found {:?}", request.name)));
    }
    let (timing, cron, interval_seconds) = match (&request.cron, &request.interval) {
        (Some(cron), None) => (Timing::cron(cron).map_err(bad)?, Some(cron.trim().to_owned()), None),
        (None, Some(interval)) => {
            let seconds = seconds_of("interval", interval)?;
            (Timing::Interval(TimeDelta::seconds(seconds)), None, Some(seconds))
        }
        _ => return Err(bad("exactly one of cron and interval is required".into())),
    };
    let window_seconds = seconds_of("window", request.window.as_deref().unwrap_or("24h"))?;
    let policy = request
        .policy
        .as_ref()
        .map(Policy::from_json)
        .transpose()
        .map_err(|e| bad(e.to_string()))?
        .map(|p| serde_json::to_string(&p))
        .transpose()
        .map_err(ApiError::internal)?;
    let mut formats = Vec::new();
    for f in request.formats.unwrap_or_else(|| vec!["json".to_owned()]) {
        let format: Format = f.parse().map_err(|e: String| bad(format!("formats: {e}")))?;
        if !formats.contains(&format) {
            formats.push(format);
        }
    }
    if formats.is_empty() {
        return Err(bad("formats: name at least one of json, html, md, csv".into()));
    }
    if let Some(url) = &request.webhook_url {
        webhook::validate_url(url).map_err(bad)?;
    }
    let next_run = timing.next_after(now).map_err(|e| bad(format!("the schedule never runs: {e}")))?;
    Ok(NewSchedule {
        name,
        cron,
        interval_seconds,
        window_seconds,
        policy,
        formats: serde_json::to_string(&formats).map_err(ApiError::internal)?,
        webhook_url: request.webhook_url,
        next_run,
        created_at: now,
    })
}

/// `POST /api/v1/schedules`.
#[utoipa::path(
    post,
    path = "/api/v1/schedules",
    tag = "reports",
    request_body(content = Object, content_type = "application/json", description = "A schedule (docs/reports.md)"),
    responses((status = 201, description = "The new schedule", body = Object), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let request: CreateSchedule = crate::reports::json_body(&body)?
        .ok_or_else(|| ApiError::BadRequest("request body: a schedule is required".into()))?;
    let new = validate(request, Utc::now())?;
    let catalog = state.store.catalog();
    let id = db::insert(catalog, &new).await?;
    let row = db::get(catalog, id).await?.ok_or_else(|| ApiError::internal(format!("schedule {id} vanished")))?;
    Ok((StatusCode::CREATED, Json(view(row, Vec::new()))).into_response())
}

#[derive(Debug, Serialize)]
pub struct Listing {
    schedules: Vec<ScheduleView>,
}

/// `GET /api/v1/schedules`: every schedule with its 5 latest deliveries.
#[utoipa::path(
    get,
    path = "/api/v1/schedules",
    tag = "reports",
    responses((status = 200, description = "`{schedules}`, each with its 5 latest deliveries", body = Object), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Listing>, ApiError> {
    require_admin(&caller)?;
    let catalog = state.store.catalog();
    let mut schedules = Vec::new();
    for row in db::list(catalog).await? {
        let deliveries = db::deliveries(catalog, row.id, 5).await?;
        schedules.push(view(row, deliveries));
    }
    Ok(Json(Listing { schedules }))
}

fn path_id(id: Result<Path<i64>, axum::extract::rejection::PathRejection>) -> Result<i64, ApiError> {
    id.map(|Path(id)| id).map_err(|e| ApiError::BadRequest(format!("schedule id: {}", e.body_text())))
}

/// `GET /api/v1/schedules/{id}`: one schedule with its 50 latest deliveries.
#[utoipa::path(
    get,
    path = "/api/v1/schedules/{id}",
    tag = "reports",
    params(("id" = i64, Path, description = "The schedule's id")),
    responses(
        (status = 200, description = "The schedule with its 50 latest deliveries", body = Object),
        (status = 404, description = "No such schedule", body = ErrorBody),
        ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn fetch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleView>, ApiError> {
    require_admin(&caller)?;
    let id = path_id(id)?;
    let catalog = state.store.catalog();
    let row = db::get(catalog, id).await?.ok_or_else(|| ApiError::NotFound(format!("no schedule {id}")))?;
    let deliveries = db::deliveries(catalog, id, 50).await?;
    Ok(Json(view(row, deliveries)))
}

/// `DELETE /api/v1/schedules/{id}`: 204; its stored reports stay, its pending deliveries go.
#[utoipa::path(
    delete,
    path = "/api/v1/schedules/{id}",
    tag = "reports",
    params(("id" = i64, Path, description = "The schedule's id")),
    responses(
        (status = 204, description = "Deleted; its reports stay"),
        (status = 404, description = "No such schedule", body = ErrorBody),
        ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let id = path_id(id)?;
    if db::delete(state.store.catalog(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no schedule {id}")))
    }
}
