//! Stored reports (`reports` table, migrations `20261127000002_reports.sql`), on the store's SQL catalog:
//! SQLite or PostgreSQL through [`Catalog`]'s pools. Each statement is written once with `$N`
//! placeholders and run on either backend by [`dispatch`]. Times are microseconds since the epoch.

use super::model::{Report, ReportWindow, Summary};
use crate::error::ApiError;
use chrono::{DateTime, Utc};
use meshlens_store::Catalog;
use serde::Serialize;

/// Runs `$body` with `$pool` bound to the catalog's pool, type-checked once per backend (the store's
/// own pattern; its macro is private to it).
macro_rules! dispatch {
    ($catalog:expr, $pool:ident => $body:expr) => {
        match $catalog {
            meshlens_store::Catalog::Sqlite($pool) => $body,
            meshlens_store::Catalog::Postgres($pool) => $body,
        }
    };
}
pub(crate) use dispatch;

/// Microseconds since the epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::UNIX_EPOCH)
}

pub(crate) fn sql_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |e| ApiError::internal(format!("{context}: {e}"))
}

/// A stored report without its body, as the history lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportMeta {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub window: ReportWindow,
    pub config_hash: String,
    /// The policy verdict; `null` without a policy (and for namespace-scoped callers, as it is mesh-wide).
    pub passed: Option<bool>,
    /// The schedule that made the report; `null` for reports made on request.
    pub schedule_id: Option<i64>,
    pub summary: Summary,
}

/// A stored report.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    pub meta: ReportMeta,
    pub report: Report,
}

#[derive(Debug, sqlx::FromRow)]
struct MetaRow {
    id: i64,
    created_at: i64,
    window_start: i64,
    window_end: i64,
    config_hash: String,
    summary: String,
    passed: Option<bool>,
    schedule_id: Option<i64>,
}

impl MetaRow {
    fn into_meta(self) -> Result<ReportMeta, ApiError> {
        let summary = serde_json::from_str(&self.summary)
            .map_err(|e| ApiError::internal(format!("stored summary of report {} does not decode: {e}", self.id)))?;
        Ok(ReportMeta {
            id: self.id,
            created_at: from_micros(self.created_at),
            window: ReportWindow { start: from_micros(self.window_start), end: from_micros(self.window_end) },
            config_hash: self.config_hash,
            passed: self.passed,
            schedule_id: self.schedule_id,
            summary,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct FullRow {
    #[sqlx(flatten)]
    meta: MetaRow,
    body: String,
}

/// The columns of [`MetaRow`], as a literal so that statements stay `&'static str` (sqlx runs only those
/// without an explicit assertion that they are safe).
macro_rules! meta_columns {
    () => {
        "id, created_at, window_start, window_end, config_hash, summary, passed, schedule_id"
    };
}

/// The `INSERT` of one report; bind with [`bind_report`].
pub const INSERT: &str = "INSERT INTO reports (created_at, window_start, window_end, config_hash, \
    config_summary, summary, passed, schedule_id, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

/// A report as the columns of its row.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub created_at: i64,
    pub window_start: i64,
    pub window_end: i64,
    pub config_hash: String,
    pub config_summary: String,
    pub summary: String,
    pub passed: Option<bool>,
    pub schedule_id: Option<i64>,
    pub body: String,
}

impl NewRow {
    pub fn of(report: &Report, schedule_id: Option<i64>) -> Result<NewRow, ApiError> {
        Ok(NewRow {
            created_at: micros(report.generated_at),
            window_start: micros(report.window.start),
            window_end: micros(report.window.end),
            config_hash: report.config.hash.clone(),
            config_summary: json(&report.config)?,
            summary: json(&report.summary)?,
            passed: report.policy.as_ref().map(|v| v.passed),
            schedule_id,
            body: json(report)?,
        })
    }
}

fn json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::internal(format!("encoding a report: {e}")))
}

/// Binds a [`NewRow`] to [`INSERT`]'s placeholders.
macro_rules! bind_report {
    ($query:expr, $row:expr) => {
        $query
            .bind($row.created_at)
            .bind($row.window_start)
            .bind($row.window_end)
            .bind(&$row.config_hash)
            .bind(&$row.config_summary)
            .bind(&$row.summary)
            .bind($row.passed)
            .bind($row.schedule_id)
            .bind(&$row.body)
    };
}
pub(crate) use bind_report;

/// Stores `report` (made by `schedule_id`, if any) and returns its id.
pub async fn insert(catalog: &Catalog, report: &Report, schedule_id: Option<i64>) -> Result<i64, ApiError> {
    let row = NewRow::of(report, schedule_id)?;
    let id: i64 = dispatch!(catalog, pool => bind_report!(sqlx::query_scalar(INSERT), row).fetch_one(pool).await)
        .map_err(sql_error("storing a report"))?;
    Ok(id)
}

/// The stored report `id`.
pub async fn get(catalog: &Catalog, id: i64) -> Result<Option<StoredReport>, ApiError> {
    let sql = concat!("SELECT ", meta_columns!(), ", body FROM reports WHERE id = $1");
    let row: Option<FullRow> = dispatch!(catalog, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
        .map_err(sql_error("reading a report"))?;
    row.map(decode).transpose()
}

/// The most recently stored report of `schedule_id` (or of any origin, for `None`): the one a new
/// report's trend compares with.
pub async fn latest(catalog: &Catalog, schedule_id: Option<i64>) -> Result<Option<StoredReport>, ApiError> {
    let row: Option<FullRow> = match schedule_id {
        Some(schedule) => {
            let sql = concat!(
                "SELECT ",
                meta_columns!(),
                ", body FROM reports WHERE schedule_id = $1 ORDER BY id DESC LIMIT 1"
            );
            dispatch!(catalog, pool => sqlx::query_as(sql).bind(schedule).fetch_optional(pool).await)
        }
        None => {
            let sql = concat!("SELECT ", meta_columns!(), ", body FROM reports ORDER BY id DESC LIMIT 1");
            dispatch!(catalog, pool => sqlx::query_as(sql).fetch_optional(pool).await)
        }
    }
    .map_err(sql_error("reading the latest report"))?;
    row.map(decode).transpose()
}

fn decode(row: FullRow) -> Result<StoredReport, ApiError> {
    let id = row.meta.id;
    let report = serde_json::from_str(&row.body)
        .map_err(|e| ApiError::internal(format!("stored report {id} does not decode: {e}")))?;
    Ok(StoredReport { meta: row.meta.into_meta()?, report })
}

/// One page of the history, newest first, and the number of stored reports.
pub async fn list(catalog: &Catalog, limit: u32, offset: u64) -> Result<(Vec<ReportMeta>, u64), ApiError> {
    let sql = concat!("SELECT ", meta_columns!(), " FROM reports ORDER BY id DESC LIMIT $1 OFFSET $2");
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let rows: Vec<MetaRow> =
        dispatch!(catalog, pool => sqlx::query_as(sql).bind(i64::from(limit)).bind(offset).fetch_all(pool).await)
            .map_err(sql_error("listing reports"))?;
    let total: i64 =
        dispatch!(catalog, pool => sqlx::query_scalar("SELECT COUNT(*) FROM reports").fetch_one(pool).await)
            .map_err(sql_error("counting reports"))?;
    let metas = rows.into_iter().map(MetaRow::into_meta).collect::<Result<_, _>>()?;
    Ok((metas, total.max(0) as u64))
}

/// A writable connection to the catalog of the store that `config` describes, with the migrations
/// applied, for commands that write history next to a running server (which holds the store's lock but
/// shares its database): the SQLite file in the data directory, or `database_url`.
pub async fn open_catalog(config: &meshlens_store::StoreConfig) -> Result<Catalog, meshlens_store::StoreError> {
    let catalog = match config.database_url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Catalog::connect_postgres(url).await?
        }
        Some(url) => {
            let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).ok_or_else(|| {
                meshlens_store::StoreError::Config(format!(
                    "unsupported database URL {url:?} (expected postgres://... or sqlite:PATH)"
                ))
            })?;
            Catalog::open_sqlite(std::path::Path::new(path), false).await?
        }
        None => Catalog::open_sqlite(&config.data_dir.join("meshlens.db"), false).await?,
    };
    catalog.migrate().await?;
    Ok(catalog)
}
