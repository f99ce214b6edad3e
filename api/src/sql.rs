//! `POST /api/v1/query`: read-only SQL over the telemetry tables (`requests`, `spans`) through DataFusion,
//! for dashboards and scripts, in a sandbox that a viewer token can be trusted with.
//!
//! What a query may do is decided in layers, each enough on its own for what it guards:
//! - the statement: exactly one, and a query (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`); DDL, DML, `COPY`,
//!   `SET` and `CREATE EXTERNAL TABLE` are refused by name before planning, and the plan is checked again
//!   with the store's [`read_only_sql_options`];
//! - the tables: every table the statement names must be `requests` or `spans`, so files and URLs
//!   (`FROM '/etc/passwd'`), table functions and `information_schema` are refused; the session has no URL
//!   tables, no table functions and no information schema to fall back on anyway;
//! - the rows: a caller scoped to a namespace gets a session whose `requests` and `spans` are the store's
//!   tables filtered to that namespace ([`scope`]), and no name reaches the unfiltered ones;
//! - the resources: each query runs in its own DataFusion runtime with a bounded memory pool and no
//!   spilling to disk, under a wall-clock timeout that cancels it, with a row limit and a result size limit,
//!   and a bounded number of queries run at once.
//!
//! The charts run their SQL through the same [`Sandbox`], so they obey the same scope and limits.

mod cooperative;
mod encode;
pub(crate) mod scope;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::executor::Executor;
use crate::state::AppState;
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement as SqlStatement, Visit, Visitor};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use meshlens_store::schema::{plain_string_schema, with_plain_strings};
use meshlens_store::{Store, Table, read_only_sql_options};
use serde::Deserialize;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Media type of the Arrow IPC stream format.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// Header of CSV and Arrow answers: `true` when the rows were cut at the row limit on request.
pub const TRUNCATED_HEADER: &str = "x-meshlens-truncated";
/// Header of CSV and Arrow answers: how many rows the answer holds.
pub const ROW_COUNT_HEADER: &str = "x-meshlens-row-count";
/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// What one query may use. A request may ask for less time or fewer rows, never for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Wall-clock time from planning to the last row (including the wait for a slot); the query is
    /// cancelled when it runs out. Default 10 s.
    pub timeout: Duration,
    /// Most rows in an answer. Default 10 000.
    pub max_rows: usize,
    /// Most bytes of an answer, counted as the Arrow in-memory size of its rows. Default 32 MiB.
    pub max_result_bytes: usize,
    /// Memory of the query's operators (sorts, aggregations, joins), with no spilling to disk. Default
    /// 256 MiB.
    pub memory_bytes: usize,
    /// Queries running at once; further ones wait for a slot within their timeout. Default 2: each query
    /// already uses every core (`target_partitions`), so more at once would only make each slower and let
    /// all of them miss their timeouts under load, where waiting in line lets the first ones finish.
    pub max_concurrent: usize,
    /// Partitions (threads) of one query. Default: the cores, at most 4.
    pub target_partitions: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: Duration::from_secs(10),
            max_rows: 10_000,
            max_result_bytes: 32 * 1024 * 1024,
            memory_bytes: 256 * 1024 * 1024,
            max_concurrent: 2,
            target_partitions: std::thread::available_parallelism().map_or(1, |n| n.get()).min(4),
        }
    }
}

/// What to do with a result longer than the row limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Answer 422: a dashboard silently showing part of the data would be worse than an error.
    Refuse,
    /// Return the first rows and say so (`truncated: true`).
    Truncate,
}

/// The rows of one query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Rows were cut at the row limit ([`Overflow::Truncate`]).
    pub truncated: bool,
    pub elapsed: Duration,
}

/// Runs SQL under [`SqlLimits`], in a session scoped to the caller; shared by the query endpoint and the
/// charts.
#[derive(Debug)]
pub struct Sandbox {
    limits: SqlLimits,
    slots: Semaphore,
}

impl Sandbox {
    pub fn new(limits: SqlLimits) -> Self {
        Sandbox { limits, slots: Semaphore::new(limits.max_concurrent.max(1)) }
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    /// Runs one read-only statement of `sql` over `store` on `executor`, seeing only `namespace`'s rows when
    /// given.
    /// `limits` may be narrower than the sandbox's own (see [`SqlLimits`]).
    pub async fn run(
        &self,
        store: &Store,
        executor: &Executor,
        namespace: Option<&str>,
        sql: &str,
        limits: &SqlLimits,
        overflow: Overflow,
    ) -> Result<QueryResult, ApiError> {
        let started = Instant::now();
        let statement = parse_one(sql)?;
        check_statement(&statement, namespace.is_some())?;
        let ctx = session(store, namespace, limits).await?;
        check_tables(&ctx, &statement)?;
        let explain = matches!(statement, DfStatement::Explain(_));
        let deadline = tokio::time::Instant::from_std(started) + limits.timeout;
        let Ok(_slot) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            return Err(ApiError::Unavailable(format!(
                "{} queries are already running and none finished within the {} ms timeout; retry later",
                self.limits.max_concurrent,
                limits.timeout.as_millis()
            )));
        };
        let data_dir = store.data_dir().to_string_lossy().into_owned();
        let run = {
            let limits = *limits;
            executor.run(async move { execute(&ctx, statement, &limits, overflow).await })
        };
        let (schema, mut batches, rows, truncated) = match tokio::time::timeout_at(deadline, run).await {
            Ok(result) => result?.map_err(|e| query_error(e, limits, &data_dir))?,
            Err(_) => {
                return Err(ApiError::LimitExceeded(format!(
                    "the query ran longer than the {} ms time limit and was cancelled",
                    limits.timeout.as_millis()
                )));
            }
        }?;
        if explain {
            batches = batches.iter().map(|b| redact(b, &data_dir)).collect::<Result<_, _>>()?;
        }
        // The store shows strings to DataFusion as views; answers keep the documented `Utf8`.
        let schema = plain_string_schema(&schema);
        let batches = batches.iter().map(with_plain_strings).collect::<Result<_, _>>().map_err(ApiError::internal)?;
        Ok(QueryResult { schema, batches, rows, truncated, elapsed: started.elapsed() })
    }
}

type Collected = (SchemaRef, Vec<RecordBatch>, usize, bool);

/// Plans, checks and runs the statement, collecting at most `limits.max_rows` rows. The outer `Result`
/// carries DataFusion's errors, the inner one the limits.
async fn execute(
    ctx: &SessionContext,
    statement: DfStatement,
    limits: &SqlLimits,
    overflow: Overflow,
) -> Result<Result<Collected, ApiError>, DataFusionError> {
    let plan = ctx.state().statement_to_plan(statement).await?;
    read_only_sql_options().verify_plan(&plan)?;
    let frame = ctx.execute_logical_plan(plan).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let mut stream = frame.execute_stream().await?;
    let (mut batches, mut rows, mut bytes, mut truncated) = (Vec::new(), 0usize, 0usize, false);
    while let Some(batch) = stream.next().await {
        let mut batch = batch?;
        let room = limits.max_rows - rows;
        if batch.num_rows() > room {
            if overflow == Overflow::Refuse {
                return Ok(Err(ApiError::LimitExceeded(format!(
                    "the result has more than {} rows (the row limit); aggregate, add a LIMIT, or send \
                     \"truncate\": true to receive the first {} rows",
                    limits.max_rows, limits.max_rows
                ))));
            }
            batch = batch.slice(0, room);
            truncated = true;
        }
        bytes += batch_bytes(&batch);
        if bytes > limits.max_result_bytes {
            return Ok(Err(ApiError::LimitExceeded(format!(
                "the result is larger than {} bytes (the result size limit); select fewer columns or rows",
                limits.max_result_bytes
            ))));
        }
        rows += batch.num_rows();
        batches.push(batch);
        if truncated {
            // Dropping the stream cancels the rest of the query.
            break;
        }
    }
    Ok(Ok((schema, batches, rows, truncated)))
}

/// Bytes of the rows of `batch` (a slice counts only its own rows).
fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()))
        .sum()
}

/// The session one query runs in: its own runtime (memory pool, no disk), the store's tables (scoped to
/// `namespace` when given) and nothing else. The charts run the analyzer on it too.
pub(crate) async fn session(
    store: &Store,
    namespace: Option<&str>,
    limits: &SqlLimits,
) -> Result<SessionContext, ApiError> {
    let pool = TrackConsumersPool::new(
        GreedyMemoryPool::new(limits.memory_bytes),
        NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()
        .map_err(ApiError::internal)?;
    let mut config =
        SessionConfig::new().with_target_partitions(limits.target_partitions.max(1)).with_information_schema(false);
    // Parquet row filtering would evaluate the caller's predicates on rows below the namespace filter.
    config.options_mut().execution.parquet.pushdown_filters = false;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(cooperative::YieldAfterJoins))
        .with_table_functions(HashMap::new())
        .with_table_factories(HashMap::new())
        .build();
    let ctx = SessionContext::new_with_state(state);
    let store_ctx = store.session_context();
    for table in Table::ALL {
        let provider = store_ctx.table_provider(table.name()).await.map_err(ApiError::internal)?;
        let provider: Arc<dyn datafusion::datasource::TableProvider> = match namespace {
            Some(ns) => Arc::new(scope::ScopedTable::new(table, provider, ns)),
            None => provider,
        };
        ctx.register_table(table.name(), provider).map_err(ApiError::internal)?;
    }
    Ok(ctx)
}

fn parse_one(sql: &str) -> Result<DfStatement, ApiError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the SQL is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    let mut statements =
        DFParser::parse_sql(sql).map_err(|e| ApiError::BadRequest(format!("SQL syntax error: {}", e.find_root())))?;
    match statements.len() {
        0 => Err(ApiError::BadRequest("the SQL is empty: send one SELECT or EXPLAIN statement".into())),
        1 => statements.pop_front().ok_or_else(|| ApiError::internal("parsed statement vanished")),
        n => Err(ApiError::BadRequest(format!(
            "one statement per request, found {n}: send statements separately (they are separated by `;`)"
        ))),
    }
}

/// The statement must be a query, or `EXPLAIN` of one (plans show the storage below the namespace filter,
/// and `EXPLAIN ANALYZE` its row counts, so scoped callers cannot explain).
fn check_statement(statement: &DfStatement, scoped: bool) -> Result<(), ApiError> {
    let refused = |what: &str| -> Result<(), ApiError> {
        Err(ApiError::BadRequest(format!("{what}; only SELECT (WITH, VALUES) and EXPLAIN run here")))
    };
    match statement {
        DfStatement::Statement(inner) => match inner.as_ref() {
            SqlStatement::Query(query) => check_query(query),
            other => {
                let text = other.to_string();
                let keywords: Vec<&str> = text.split_whitespace().take(2).collect();
                refused(&format!("`{}` statements are refused: the query API is read-only", keywords.join(" ")))
            }
        },
        DfStatement::CreateExternalTable(_) => {
            refused("CREATE EXTERNAL TABLE is refused: tables over files or URLs are not available")
        }
        DfStatement::CopyTo(_) => refused("COPY is refused: the query API writes no files"),
        DfStatement::Reset(_) => refused("RESET is refused: session settings cannot be changed"),
        DfStatement::Explain(_) if scoped => Err(ApiError::BadRequest(
            "EXPLAIN is not available to namespace-scoped tokens: plans show the storage of every namespace".into(),
        )),
        DfStatement::Explain(explain) => match explain.statement.as_ref() {
            DfStatement::Statement(inner) if matches!(inner.as_ref(), SqlStatement::Query(_)) => {
                check_statement(&explain.statement, scoped)
            }
            _ => refused("EXPLAIN of anything but a query is refused"),
        },
    }
}

/// Refuses `SELECT ... INTO` (which creates a table) and statements nested in a query (`WITH t AS
/// (INSERT ...)`), wherever they are.
fn check_query(query: &Query) -> Result<(), ApiError> {
    struct Writes(Option<String>);
    impl Visitor for Writes {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            let mut bodies = vec![query.body.as_ref()];
            while let Some(body) = bodies.pop() {
                match body {
                    SetExpr::Select(select) if select.into.is_some() => {
                        self.0 = Some("SELECT ... INTO creates a table and is refused".into());
                        return ControlFlow::Break(());
                    }
                    SetExpr::SetOperation { left, right, .. } => bodies.extend([left.as_ref(), right.as_ref()]),
                    SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                        self.0 = Some("statements that change data are refused, also inside a query".into());
                        return ControlFlow::Break(());
                    }
                    _ => {}
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut writes = Writes(None);
    let _ = query.visit(&mut writes);
    match writes.0 {
        Some(reason) => Err(ApiError::BadRequest(format!("{reason}; only SELECT (WITH, VALUES) and EXPLAIN run here"))),
        None => Ok(()),
    }
}

/// Every table the statement reads must be one of the store's.
fn check_tables(ctx: &SessionContext, statement: &DfStatement) -> Result<(), ApiError> {
    let references = ctx
        .state()
        .resolve_table_references(statement)
        .map_err(|e| ApiError::BadRequest(format!("invalid table name: {}", e.find_root())))?;
    let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    for reference in references {
        let known = names.contains(&reference.table())
            && match &reference {
                TableReference::Bare { .. } => true,
                TableReference::Partial { schema, .. } => schema.as_ref() == "public",
                TableReference::Full { catalog, schema, .. } => {
                    catalog.as_ref() == "datafusion" && schema.as_ref() == "public"
                }
            };
        if known {
            continue;
        }
        if reference.schema() == Some("information_schema") {
            return Err(ApiError::BadRequest(format!(
                "`{reference}`: information_schema is not available; the tables are {}",
                names.join(" and ")
            )));
        }
        return Err(ApiError::BadRequest(format!(
            "`{reference}` is not a table here: only {} can be queried (no files, URLs, table functions or \
             other catalogs)",
            names.join(" and ")
        )));
    }
    Ok(())
}

/// An error of a query as the client sees it: its own mistakes with DataFusion's reason, exhausted memory
/// as a limit, and failures of the server as internal errors (logged, not sent).
fn query_error(error: DataFusionError, limits: &SqlLimits, data_dir: &str) -> ApiError {
    let root = error.find_root();
    let message = redact_text(&root.to_string(), data_dir);
    match root {
        DataFusionError::ResourcesExhausted(_) => ApiError::LimitExceeded(format!(
            "the query needs more than the {} of memory a query may use: {message}",
            human_bytes(limits.memory_bytes)
        )),
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => ApiError::BadRequest(format!("query failed: {message}")),
        _ => ApiError::internal(format!("query failed: {error}")),
    }
}

/// `n` bytes in the largest binary unit that keeps it whole, e.g. `512 KiB`, `256 MiB`.
fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let (mut value, mut unit) = (n, 0);
    while unit + 1 < UNITS.len() && value >= 1024 && value % 1024 == 0 {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
}

fn redact_text(text: &str, data_dir: &str) -> String {
    if data_dir.is_empty() {
        return text.to_owned();
    }
    // Object-store paths are written without the leading slash.
    text.replace(data_dir, "<data-dir>").replace(data_dir.trim_start_matches('/'), "<data-dir>")
}

/// `batch` with the data directory hidden in its text columns (EXPLAIN names the Parquet files).
fn redact(batch: &RecordBatch, data_dir: &str) -> Result<RecordBatch, ApiError> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| match column.as_any().downcast_ref::<StringArray>() {
            Some(strings) => {
                Arc::new(strings.iter().map(|v| v.map(|s| redact_text(s, data_dir))).collect::<StringArray>())
                    as ArrayRef
            }
            None => Arc::clone(column),
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).map_err(ApiError::internal)
}

/// Answer formats of the query endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueryFormat {
    Json,
    Csv,
    Arrow,
}

/// Body of `POST /api/v1/query`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One SELECT (WITH, VALUES) or EXPLAIN statement over `requests` and `spans`.
    pub sql: String,
    /// `json` (default), `csv` or `arrow`; when absent, the Accept header decides.
    #[serde(default)]
    pub format: Option<QueryFormat>,
    /// Fewer rows than the server's limit.
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Less time than the server's limit, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Return the first `max_rows` rows of a longer result (flagged `truncated`) instead of answering 422.
    #[serde(default)]
    pub truncate: bool,
}

/// The SQL endpoint under the default limits.
pub fn routes() -> Router<AppState> {
    routes_with(SqlLimits::default())
}

/// The SQL endpoint under `limits`.
pub fn routes_with(limits: SqlLimits) -> Router<AppState> {
    Router::new().route("/query", post(query)).layer(Extension(Arc::new(Sandbox::new(limits))))
}

/// `POST /api/v1/query`.
#[utoipa::path(
    post,
    path = "/api/v1/query",
    tag = "sql",
    description = "One read-only SQL statement (SELECT, WITH, VALUES, EXPLAIN) over the `requests` and `spans` \
                   tables, limited in time, rows, bytes and memory; a namespace-scoped token sees only its \
                   namespace's rows. See docs/api.md.",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The result: JSON `{columns, rows, truncated, ...}`, CSV or Arrow IPC stream",
         content((Object = "application/json"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.arrow.stream"))),
        (status = 422, description = "The query went over a limit (rows, bytes, time or memory)", body = crate::ErrorBody),
        (status = 503, description = "Too many queries at once; see Retry-After", body = crate::ErrorBody),
        crate::v1::ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn query(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(sandbox): Extension<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("invalid request body: {e} (expected {{\"sql\": \"SELECT ...\"}})"))
    })?;
    let format = match request.format {
        Some(format) => format,
        None => format_from_accept(&headers),
    };
    let limits = narrowed(sandbox.limits(), &request)?;
    let overflow = if request.truncate { Overflow::Truncate } else { Overflow::Refuse };
    let result = sandbox
        .run(&state.store, state.executor(), caller.namespace.as_deref(), &request.sql, &limits, overflow)
        .await?;
    let (content_type, body) = match format {
        QueryFormat::Json => ("application/json", encode::json(&result)?),
        QueryFormat::Csv => ("text/csv; charset=utf-8", encode::csv(&result)?),
        QueryFormat::Arrow => (ARROW_STREAM, encode::arrow_stream(&result.schema, &result.batches)?),
    };
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(TRUNCATED_HEADER, HeaderValue::from_static(if result.truncated { "true" } else { "false" }));
    headers.insert(ROW_COUNT_HEADER, HeaderValue::from(result.rows));
    Ok(response)
}

/// `text/csv` or the Arrow stream type when the Accept header names one (before JSON, if both), else JSON.
fn format_from_accept(headers: &HeaderMap) -> QueryFormat {
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    for item in accept.split(',') {
        match item.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            "text/csv" => return QueryFormat::Csv,
            ARROW_STREAM => return QueryFormat::Arrow,
            "application/json" => return QueryFormat::Json,
            _ => {}
        }
    }
    QueryFormat::Json
}

/// The server's limits, lowered where the request asks; asking for more than the server allows is a
/// mistake worth telling.
fn narrowed(limits: &SqlLimits, request: &QueryRequest) -> Result<SqlLimits, ApiError> {
    let mut limits = *limits;
    if let Some(rows) = request.max_rows {
        if rows == 0 || rows > limits.max_rows {
            return Err(ApiError::BadRequest(format!(
                "max_rows must be between 1 and {}, got {rows}",
                limits.max_rows
            )));
        }
        limits.max_rows = rows;
    }
    if let Some(ms) = request.timeout_ms {
        let max = limits.timeout.as_millis();
        if ms == 0 || u128::from(ms) > max {
            return Err(ApiError::BadRequest(format!("timeout_ms must be between 1 and {max}, got {ms}")));
        }
        limits.timeout = Duration::from_millis(ms);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_picks_the_format() {
        let mut headers = HeaderMap::new();
        assert_eq!(format_from_accept(&headers), QueryFormat::Json);
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/csv;q=0.9, application/json"));
        assert_eq!(format_from_accept(&headers), QueryFormat::Csv);
        headers.insert(header::ACCEPT, HeaderValue::from_static(ARROW_STREAM));
        assert_eq!(format_from_accept(&headers), QueryFormat::Arrow);
    }

    #[test]
    fn statements_are_refused_by_name() {
        for (sql, expected) in [
            ("CREATE TABLE t AS SELECT 1", "`CREATE TABLE` statements are refused"),
            ("INSERT INTO requests VALUES (1)", "`INSERT INTO` statements are refused"),
            ("DROP TABLE requests", "`DROP TABLE` statements are refused"),
            ("SET datafusion.execution.batch_size = 1", "`SET datafusion.execution.batch_size` statements"),
            ("COPY requests TO '/tmp/x.csv'", "COPY is refused"),
            ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'", "CREATE EXTERNAL TABLE is refused"),
            ("SELECT 1 INTO t", "SELECT ... INTO creates a table"),
            ("EXPLAIN COPY requests TO '/tmp/x.csv'", "EXPLAIN of anything but a query"),
        ] {
            let statement = parse_one(sql).expect(sql);
            let err = check_statement(&statement, false).expect_err(sql).to_string();
            assert!(err.contains(expected), "{sql}: {err}");
        }
        assert!(check_statement(&parse_one("SELECT 1").unwrap(), true).is_ok());
        assert!(check_statement(&parse_one("EXPLAIN SELECT 1").unwrap(), false).is_ok());
        assert!(check_statement(&parse_one("EXPLAIN SELECT 1").unwrap(), true).is_err());
    }

    #[test]
    fn one_statement_only() {
        assert!(parse_one("SELECT 1; SELECT 2").unwrap_err().to_string().contains("found 2"));
        assert!(parse_one("  ").unwrap_err().to_string().contains("empty"));
        assert!(parse_one("SELECT 1;").is_ok());
        assert!(parse_one("SELEC 1").unwrap_err().to_string().contains("syntax error"));
    }

    #[test]
    fn redaction_hides_the_data_directory_with_and_without_slash() {
        let text = "file_groups={1 group: [[/srv/data/parquet/requests/a.parquet, srv/data/parquet/b.parquet]]}";
        assert_eq!(
            redact_text(text, "/srv/data"),
            "file_groups={1 group: [[<data-dir>/parquet/requests/a.parquet, <data-dir>/parquet/b.parquet]]}"
        );
    }
}
