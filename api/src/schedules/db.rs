//! The `schedules` and `report_deliveries` tables (migrations `20261127000003_schedules.sql`). A run is
//! committed in one transaction that moves `next_run` only if it still holds the due time the run was for,
//! stores the report and queues its delivery; so a crash before the commit repeats the run at the next
//! start, a crash after it does not, and two servers sharing PostgreSQL never both commit one run.

use crate::error::ApiError;
use crate::reports::history::{NewRow, bind_report, dispatch, from_micros, micros, sql_error};
use chrono::{DateTime, Utc};
use meshlens_store::Catalog;
use serde::Serialize;

/// One row of `schedules`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: i64,
    pub name: String,
    pub cron: Option<String>,
    pub interval_seconds: Option<i64>,
    pub window_seconds: i64,
    pub policy: Option<String>,
    pub formats: String,
    pub webhook_url: Option<String>,
    pub next_run: i64,
    pub created_at: i64,
    pub last_run_at: Option<i64>,
    pub last_report_id: Option<i64>,
    pub last_error: Option<String>,
}

/// The columns of [`ScheduleRow`], as a literal so that statements stay `&'static str`.
macro_rules! schedule_columns {
    () => {
        "id, name, cron, interval_seconds, window_seconds, policy, formats, webhook_url, next_run, created_at, \
         last_run_at, last_report_id, last_error"
    };
}

/// A schedule to create.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub name: String,
    pub cron: Option<String>,
    pub interval_seconds: Option<i64>,
    pub window_seconds: i64,
    pub policy: Option<String>,
    /// JSON array.
    pub formats: String,
    pub webhook_url: Option<String>,
    pub next_run: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Delivery states, as stored.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// One row of `report_deliveries`, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub schedule_id: i64,
    pub report_id: i64,
    pub url: String,
    /// `pending`, `delivered` or `failed` (attempts exhausted).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// HTTP status of the last answer.
    pub last_status: Option<i64>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    schedule_id: i64,
    report_id: i64,
    url: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    last_status: Option<i64>,
    next_attempt_at: i64,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Delivery {
        Delivery {
            next_attempt_at: (r.status == PENDING).then(|| from_micros(r.next_attempt_at)),
            id: r.id,
            schedule_id: r.schedule_id,
            report_id: r.report_id,
            url: r.url,
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            last_status: r.last_status,
            created_at: from_micros(r.created_at),
            delivered_at: r.delivered_at.map(from_micros),
        }
    }
}

macro_rules! delivery_columns {
    () => {
        "id, schedule_id, report_id, url, status, attempts, last_error, last_status, next_attempt_at, created_at, \
         delivered_at"
    };
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Creates a schedule; `BadRequest` when the name is taken.
pub async fn insert(catalog: &Catalog, s: &NewSchedule) -> Result<i64, ApiError> {
    let sql = "INSERT INTO schedules (name, cron, interval_seconds, window_seconds, policy, formats, webhook_url, \
        next_run, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";
    let result: Result<i64, sqlx::Error> = dispatch!(catalog, pool => sqlx::query_scalar(sql)
        .bind(&s.name)
        .bind(&s.cron)
        .bind(s.interval_seconds)
        .bind(s.window_seconds)
        .bind(&s.policy)
        .bind(&s.formats)
        .bind(&s.webhook_url)
        .bind(micros(s.next_run))
        .bind(micros(s.created_at))
        .fetch_one(pool)
        .await);
    match result {
        Ok(id) => Ok(id),
        Err(e) if is_unique_violation(&e) => Err(ApiError::BadRequest(format!("a schedule named {:?} exists", s.name))),
        Err(e) => Err(sql_error("creating a schedule")(e)),
    }
}

pub async fn list(catalog: &Catalog) -> Result<Vec<ScheduleRow>, ApiError> {
    let sql = concat!("SELECT ", schedule_columns!(), " FROM schedules ORDER BY id");
    dispatch!(catalog, pool => sqlx::query_as(sql).fetch_all(pool).await).map_err(sql_error("listing schedules"))
}

pub async fn get(catalog: &Catalog, id: i64) -> Result<Option<ScheduleRow>, ApiError> {
    let sql = concat!("SELECT ", schedule_columns!(), " FROM schedules WHERE id = $1");
    dispatch!(catalog, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
        .map_err(sql_error("reading a schedule"))
}

/// Deletes a schedule and its pending deliveries; `false` when there was none. Its reports stay.
pub async fn delete(catalog: &Catalog, id: i64) -> Result<bool, ApiError> {
    let sql = "DELETE FROM schedules WHERE id = $1";
    let result = dispatch!(catalog, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(sql_error("deleting a schedule"))?;
    Ok(result > 0)
}

/// Schedules due at `now`, earliest first.
pub async fn due(catalog: &Catalog, now: DateTime<Utc>) -> Result<Vec<ScheduleRow>, ApiError> {
    let sql = concat!("SELECT ", schedule_columns!(), " FROM schedules WHERE next_run <= $1 ORDER BY next_run, id");
    dispatch!(catalog, pool => sqlx::query_as(sql).bind(micros(now)).fetch_all(pool).await)
        .map_err(sql_error("finding due schedules"))
}

/// Commits the run of `schedule` that was due at `due`: moves `next_run` to `next` (only if it is still
/// `due`), stores the report and queues a delivery to the webhook. Returns the report id, or `None` when
/// another process committed this run first (nothing is written then).
pub async fn commit_run(
    catalog: &Catalog,
    schedule: &ScheduleRow,
    due: i64,
    next: DateTime<Utc>,
    report: &NewRow,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let advance = "UPDATE schedules SET next_run = $1, last_run_at = $2, last_error = NULL \
        WHERE id = $3 AND next_run = $4";
    let last_report = "UPDATE schedules SET last_report_id = $1 WHERE id = $2";
    let queue = "INSERT INTO report_deliveries (schedule_id, report_id, url, status, attempts, next_attempt_at, \
        created_at) VALUES ($1, $2, $3, $4, 0, $5, $5)";
    let now = micros(now);
    dispatch!(catalog, pool => {
        let mut tx = pool.begin().await.map_err(sql_error("starting a schedule run"))?;
        let claimed = sqlx::query(advance)
            .bind(micros(next))
            .bind(now)
            .bind(schedule.id)
            .bind(due)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("advancing a schedule"))?
            .rows_affected();
        if claimed == 0 {
            tx.rollback().await.map_err(sql_error("abandoning a schedule run"))?;
            return Ok(None);
        }
        let id: i64 = bind_report!(sqlx::query_scalar(crate::reports::history::INSERT), report)
            .fetch_one(&mut *tx)
            .await
            .map_err(sql_error("storing a scheduled report"))?;
        sqlx::query(last_report).bind(id).bind(schedule.id).execute(&mut *tx).await
            .map_err(sql_error("recording a schedule's report"))?;
        if let Some(url) = &schedule.webhook_url {
            sqlx::query(queue).bind(schedule.id).bind(id).bind(url).bind(PENDING).bind(now).execute(&mut *tx).await
                .map_err(sql_error("queueing a delivery"))?;
        }
        tx.commit().await.map_err(sql_error("committing a schedule run"))?;
        Ok(Some(id))
    })
}

/// Records that the run due at `due` could not make a report, and moves on to `next`.
pub async fn fail_run(
    catalog: &Catalog,
    schedule: &ScheduleRow,
    due: i64,
    next: DateTime<Utc>,
    error: &str,
) -> Result<(), ApiError> {
    let sql = "UPDATE schedules SET next_run = $1, last_error = $2 WHERE id = $3 AND next_run = $4";
    dispatch!(catalog, pool => sqlx::query(sql).bind(micros(next)).bind(error).bind(schedule.id).bind(due)
        .execute(pool).await.map(|_| ()))
    .map_err(sql_error("recording a failed schedule run"))?;
    Ok(())
}

/// The latest deliveries of `schedule_id`, newest first.
pub async fn deliveries(catalog: &Catalog, schedule_id: i64, limit: u32) -> Result<Vec<Delivery>, ApiError> {
    let sql = concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM report_deliveries WHERE schedule_id = $1 ORDER BY id DESC LIMIT $2"
    );
    let rows: Vec<DeliveryRow> = dispatch!(catalog, pool => sqlx::query_as(sql)
        .bind(schedule_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)
    .map_err(sql_error("listing deliveries"))?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}

/// Pending deliveries whose next attempt is due, oldest first.
pub async fn due_deliveries(catalog: &Catalog, now: DateTime<Utc>, limit: u32) -> Result<Vec<Delivery>, ApiError> {
    let sql = concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM report_deliveries WHERE status = $1 AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3"
    );
    let rows: Vec<DeliveryRow> = dispatch!(catalog, pool => sqlx::query_as(sql)
        .bind(PENDING)
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)
    .map_err(sql_error("finding due deliveries"))?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: &'static str,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// When to try again (status pending).
    pub next_attempt_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// Records an attempt of delivery `id` (which had made `attempts_before` attempts).
pub async fn record_attempt(
    catalog: &Catalog,
    id: i64,
    attempts_before: i64,
    attempt: &Attempt,
) -> Result<(), ApiError> {
    let sql = "UPDATE report_deliveries SET status = $1, attempts = $2, last_error = $3, last_status = $4, \
        next_attempt_at = $5, delivered_at = $6 WHERE id = $7 AND attempts = $8";
    let delivered_at = (attempt.status == DELIVERED).then(|| micros(attempt.at));
    dispatch!(catalog, pool => sqlx::query(sql)
        .bind(attempt.status)
        .bind(attempts_before + 1)
        .bind(&attempt.error)
        .bind(attempt.http_status.map(i64::from))
        .bind(micros(attempt.next_attempt_at))
        .bind(delivered_at)
        .bind(id)
        .bind(attempts_before)
        .execute(pool)
        .await
        .map(|_| ()))
    .map_err(sql_error("recording a delivery attempt"))?;
    Ok(())
}
