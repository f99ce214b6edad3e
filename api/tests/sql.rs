//! `POST /api/v1/query` against a real store: answers in every format, and the sandbox — statements,
//! tables, limits and namespace scope — refusing or filtering cleanly.

mod telemetry_fixture;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use meshlens_api::Caller;
use meshlens_api::sql::{self, ARROW_STREAM, SqlLimits};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use telemetry_fixture::{Answer, Fixture, app, fixture, send, viewer};

const RECORDS: usize = 3000;

fn sql_app(fixture: &Fixture, caller: Caller, limits: SqlLimits) -> Router {
    app(sql::routes_with(limits), &fixture.state, caller)
}

async fn post(app: &Router, body: Value) -> Answer {
    post_raw(app, body.to_string(), None).await
}

async fn post_raw(app: &Router, body: String, accept: Option<&str>) -> Answer {
    let mut request = Request::post("/api/v1/query").header("content-type", "application/json");
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    send(app, request.body(Body::from(body)).expect("request")).await
}

/// The single value of a one-row, one-column JSON answer.
async fn scalar(app: &Router, sql: &str) -> Value {
    let answer = post(app, json!({ "sql": sql })).await;
    assert_eq!(answer.status, StatusCode::OK, "{sql}: {}", answer.text());
    let body = answer.json();
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1), "{sql}: {body}");
    body["rows"][0][0].clone()
}

#[tokio::test]
async fn json_answers_are_typed() {
    let fixture = fixture(RECORDS).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits::default());
    let answer = post(
        &app,
        json!({ "sql": "SELECT count(*) AS n, max(timestamp) AS last, avg(duration_ms) AS mean, \
                        max(path) AS path, bool_or(status >= 500) AS any_error \
                        FROM requests" }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = answer.json();
    let types: Vec<(&str, &str)> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("n", "Int64"),
            ("last", "Timestamp(µs, \"UTC\")"),
            ("mean", "Float64"),
            ("path", "Utf8"),
            ("any_error", "Boolean"),
        ]
    );
    let row = &body["rows"][0];
    assert_eq!(row[0], json!(RECORDS), "both the Parquet half and the in-memory half are counted");
    let last = fixture.records.iter().map(|r| r.timestamp).max().unwrap();
    let parsed: chrono::DateTime<chrono::Utc> = row[1].as_str().unwrap().parse().expect("RFC 3339 timestamp");
    assert_eq!(parsed, last);
    assert!(row[2].is_f64());
    assert!(row[3].as_str().unwrap().starts_with("/api/v1/"));
    assert_eq!(row[4], json!(true));
    assert_eq!(body["truncated"], json!(false));
    assert_eq!(body["row_count"], json!(1));

    let duplicates = post(
        &app,
        json!({ "sql": "SELECT a.request_id, b.request_id FROM (SELECT request_id FROM requests LIMIT 1) a \
                        CROSS JOIN (SELECT 'other' AS request_id) b" }),
    )
    .await
    .json();
    assert_eq!(duplicates["columns"][0]["name"], duplicates["columns"][1]["name"]);
    assert_eq!(duplicates["rows"][0][1], json!("other"), "duplicate column names keep their own values");
    assert_eq!(duplicates["rows"][0][0].as_str().map(str::len), Some(32));

    let lists = post(
        &app,
        json!({ "sql": "SELECT response_flags FROM requests WHERE cardinality(response_flags) = 2 LIMIT 1" }),
    )
    .await;
    assert_eq!(lists.json()["rows"][0][0], json!(["UF", "URX"]), "lists are JSON arrays");
}

#[tokio::test]
async fn csv_and_arrow_answers_read_back() {
    let fixture = fixture(RECORDS).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits::default());
    let sql = "SELECT destination_service, count(*) AS n, response_flags FROM requests \
               GROUP BY destination_service, response_flags ORDER BY n DESC, destination_service";
    let expected = post(&app, json!({ "sql": sql })).await.json();
    let expected_rows = expected["rows"].as_array().unwrap().len();

    let csv = post(&app, json!({ "sql": sql, "format": "csv" })).await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.text());
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(csv.headers[sql::ROW_COUNT_HEADER], expected_rows.to_string().as_str());
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "destination_service,n,response_flags");
    assert_eq!(lines.len(), expected_rows + 1);
    let first = &expected["rows"][0];
    assert!(lines[1].starts_with(&format!("{},{}", first[0].as_str().unwrap(), first[1])), "{}", lines[1]);
    assert!(text.contains("\"[UF, URX]\""), "lists are written as their text form");

    // The Accept header chooses when the body names no format.
    let arrow = post_raw(&app, json!({ "sql": sql }).to_string(), Some(ARROW_STREAM)).await;
    assert_eq!(arrow.status, StatusCode::OK);
    assert_eq!(arrow.headers["content-type"], ARROW_STREAM);
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body.to_vec()), None).expect("IPC stream");
    let schema = reader.schema();
    assert_eq!(schema.field(0).name(), "destination_service");
    assert_eq!(schema.field(1).data_type(), &arrow::datatypes::DataType::Int64);
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    let counts: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column(1).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
            column.values().to_vec()
        })
        .collect();
    let expected_counts: Vec<i64> =
        expected["rows"].as_array().unwrap().iter().map(|r| r[1].as_i64().unwrap()).collect();
    assert_eq!(counts, expected_counts);

    // An empty result still has its header, and the Arrow stream its schema.
    let empty = "SELECT method, status FROM requests WHERE status = 999";
    assert_eq!(post(&app, json!({ "sql": empty, "format": "csv" })).await.text(), "method,status\n");
    let answer = post(&app, json!({ "sql": empty, "format": "arrow" })).await;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(answer.body.to_vec()), None).unwrap();
    assert_eq!(reader.schema().fields().len(), 2);
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 0);
}

#[tokio::test]
async fn files_urls_table_functions_and_catalogs_are_refused() {
    let fixture = fixture(300).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits::default());
    for (sql, expected) in [
        ("SELECT * FROM '/etc/passwd'", "`/etc/passwd` is not a table here"),
        ("SELECT * FROM 'file:///etc/passwd'", "is not a table here"),
        ("SELECT * FROM 'https://example.com/x.parquet'", "is not a table here"),
        ("SELECT * FROM read_parquet('/etc/passwd')", "`read_parquet` is not a table here"),
        ("SELECT * FROM read_csv('/etc/passwd')", "`read_csv` is not a table here"),
        ("SELECT * FROM generate_series(1, 10)", "`generate_series` is not a table here"),
        ("SELECT count(*) FROM requests r JOIN '/etc/hosts' h ON true", "`/etc/hosts` is not a table here"),
        ("SELECT * FROM requests WHERE path IN (SELECT * FROM '/etc/passwd')", "`/etc/passwd` is not a table"),
        ("SELECT * FROM information_schema.tables", "information_schema is not available"),
        ("SELECT * FROM information_schema.df_settings", "information_schema is not available"),
        ("SELECT * FROM other.public.requests", "is not a table here"),
        ("SHOW TABLES", "`SHOW TABLES` statements are refused"),
        ("DESCRIBE requests", "statements are refused"),
    ] {
        let answer = post(&app, json!({ "sql": sql })).await;
        let message = answer.error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(expected), "{sql}: {message}");
    }
    // The tables can still be named in full.
    assert_eq!(scalar(&app, "SELECT count(*) FROM datafusion.public.requests").await, json!(300));
}

#[tokio::test]
async fn ddl_dml_copy_set_and_multiple_statements_are_refused() {
    let fixture = fixture(300).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits::default());
    let target = fixture.dir.path().join("copied.csv");
    let copy = format!("COPY requests TO '{}'", target.display());
    let copy_query = format!("COPY (SELECT 1) TO '{}' STORED AS CSV", target.display());
    for (sql, expected) in [
        ("CREATE TABLE t AS SELECT * FROM requests", "`CREATE TABLE` statements are refused"),
        ("CREATE VIEW v AS SELECT * FROM requests", "`CREATE VIEW` statements are refused"),
        ("CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'", "CREATE EXTERNAL TABLE is refused"),
        ("INSERT INTO requests SELECT * FROM requests", "`INSERT INTO` statements are refused"),
        ("DELETE FROM requests", "`DELETE FROM` statements are refused"),
        ("UPDATE requests SET path = '/'", "`UPDATE requests` statements are refused"),
        ("DROP TABLE requests", "`DROP TABLE` statements are refused"),
        (copy.as_str(), "COPY is refused"),
        (copy_query.as_str(), "COPY is refused"),
        (
            "SET datafusion.execution.target_partitions = 64",
            "`SET datafusion.execution.target_partitions` statements are refused",
        ),
        ("RESET datafusion.execution.batch_size", "refused"),
        ("SELECT * INTO t FROM requests", "SELECT ... INTO creates a table"),
        ("EXPLAIN CREATE TABLE t AS SELECT 1", "EXPLAIN of anything but a query"),
        ("SELECT 1; DROP TABLE requests", "one statement per request, found 2"),
        ("SELECT 1; SELECT 2", "one statement per request, found 2"),
        ("", "the SQL is empty"),
        ("SELEKT 1", "SQL syntax error"),
    ] {
        let answer = post(&app, json!({ "sql": sql })).await;
        let message = answer.error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(expected), "{sql}: {message}");
    }
    assert!(!target.exists(), "COPY wrote no file");
    assert_eq!(scalar(&app, "SELECT count(*) FROM requests").await, json!(300), "the tables are intact");
}

#[tokio::test]
async fn bad_bodies_and_limits_above_the_server_are_refused() {
    let fixture = fixture(30).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits { max_rows: 100, ..SqlLimits::default() });
    for (body, expected) in [
        ("not json".to_owned(), "invalid request body"),
        (json!({ "query": "SELECT 1" }).to_string(), "unknown field `query`"),
        (json!({ "sql": "SELECT 1", "format": "xml" }).to_string(), "unknown variant `xml`"),
        (json!({ "sql": "SELECT 1", "max_rows": 101 }).to_string(), "max_rows must be between 1 and 100"),
        (json!({ "sql": "SELECT 1", "timeout_ms": 0 }).to_string(), "timeout_ms must be between 1 and 10000"),
        (json!({ "sql": "x".repeat(70_000) }).to_string(), "at most 65536 are accepted"),
    ] {
        let message = post_raw(&app, body, None).await.error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(expected), "{message}");
    }
    let message = post(&app, json!({ "sql": "SELECT no_such_column FROM requests" }))
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("no_such_column"), "{message}");
    let message = post(&app, json!({ "sql": "SELECT 1 / (status - status) FROM requests" }))
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.to_lowercase().contains("divide by zero"), "{message}");
}

#[tokio::test]
async fn long_results_are_refused_or_truncated_on_request() {
    let fixture = fixture(RECORDS).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits { max_rows: 1000, ..SqlLimits::default() });
    let message = post(&app, json!({ "sql": "SELECT * FROM requests" }))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
    assert!(message.contains("more than 1000 rows"), "{message}");

    let answer = post(&app, json!({ "sql": "SELECT * FROM requests", "max_rows": 250, "truncate": true })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["rows"].as_array().unwrap().len(), 250);
    assert_eq!(body["truncated"], json!(true));
    assert_eq!(body["columns"].as_array().unwrap().len(), 38);

    let csv = post(&app, json!({ "sql": "SELECT path FROM requests", "format": "csv", "truncate": true })).await;
    assert_eq!(csv.headers[sql::TRUNCATED_HEADER], "true");
    assert_eq!(csv.text().lines().count(), 1001);

    // Exactly at the limit is not truncated.
    let exact = post(&app, json!({ "sql": "SELECT path FROM requests LIMIT 1000" })).await.json();
    assert_eq!(exact["truncated"], json!(false));

    let small = sql_app(&fixture, viewer(None), SqlLimits { max_result_bytes: 64 * 1024, ..SqlLimits::default() });
    let message = post(&small, json!({ "sql": "SELECT * FROM requests LIMIT 2000" }))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
    assert!(message.contains("larger than 65536 bytes"), "{message}");
}

#[tokio::test]
async fn memory_hungry_queries_fail_cleanly() {
    let fixture = fixture(RECORDS).await;
    let limits = SqlLimits { memory_bytes: 512 * 1024, ..SqlLimits::default() };
    let app = sql_app(&fixture, viewer(None), limits);
    for sql in [
        "SELECT * FROM requests ORDER BY path, request_id LIMIT 5",
        "SELECT *, row_number() OVER (ORDER BY path, request_id) FROM requests LIMIT 5",
    ] {
        let message = post(&app, json!({ "sql": sql })).await.error(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
        assert!(message.contains("more than the 512 KiB of memory a query may use"), "{message}");
        assert!(message.contains("Resources exhausted"), "DataFusion's reason is kept: {message}");
    }
    // The server is fine, and small queries still run under the same limit.
    assert_eq!(scalar(&app, "SELECT count(*) FROM requests").await, json!(RECORDS));
    let roomy = sql_app(&fixture, viewer(None), SqlLimits::default());
    let answer = post(&roomy, json!({ "sql": "SELECT * FROM requests ORDER BY path, request_id LIMIT 5" })).await;
    assert_eq!(answer.status, StatusCode::OK, "the same sort fits the default limit: {}", answer.text());
}

#[tokio::test]
async fn slow_queries_are_cancelled_at_the_timeout() {
    let fixture = fixture(RECORDS).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits::default());
    // 3000^3 = 2.7e10 joined rows: hours of work, so only the timeout can end it.
    let sql =
        "SELECT count(*) FROM requests a, requests b, requests c WHERE a.duration_ms + b.duration_ms > c.duration_ms";
    let started = Instant::now();
    let message = post(&app, json!({ "sql": sql, "timeout_ms": 500 }))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
    assert!(message.contains("longer than the 500 ms time limit"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "cancelled, not run to the end: {:?}", started.elapsed());
    assert_eq!(scalar(&app, "SELECT count(*) FROM requests").await, json!(RECORDS));
}

#[tokio::test]
async fn scoped_callers_see_only_their_namespace() {
    let fixture = fixture(RECORDS).await;
    let shop = sql_app(&fixture, viewer(Some("shop")), SqlLimits::default());
    let visible = fixture.visible("shop");
    assert!(visible > 0 && visible < RECORDS);
    for sql in [
        "SELECT count(*) FROM requests",
        "SELECT count(*) FROM (SELECT * FROM requests WHERE true OR source_namespace <> 'shop') t",
        "WITH everything AS (SELECT * FROM requests) SELECT count(*) FROM everything",
        "SELECT count(*) FROM requests WHERE source_namespace = 'shop' OR destination_namespace = 'shop' \
         OR source_namespace IS NULL OR 1 = 1",
        "SELECT count(*) FROM (SELECT request_id FROM requests UNION ALL SELECT request_id FROM requests \
         WHERE false) u",
        "SELECT count(*) FROM datafusion.public.requests",
        "SELECT (SELECT count(*) FROM requests)",
    ] {
        assert_eq!(scalar(&shop, sql).await, json!(visible), "{sql}");
    }
    let seen = post(
        &shop,
        json!({ "sql": "SELECT DISTINCT source_namespace, destination_namespace FROM requests ORDER BY 1, 2" }),
    )
    .await
    .json();
    assert_eq!(seen["rows"], json!([["shop", "bank"], ["shop", "shop"]]));
    assert_eq!(scalar(&shop, "SELECT count(*) FROM requests WHERE source_namespace = 'bank'").await, json!(0));
    assert_eq!(
        scalar(&shop, "SELECT count(*) FROM requests a JOIN requests b ON a.request_id = b.request_id").await,
        json!(visible)
    );
    // Spans know only their own service's namespace: the server spans of shop's calls into bank are bank's.
    let spans = post(&shop, json!({ "sql": "SELECT DISTINCT service_namespace FROM spans" })).await.json();
    assert_eq!(spans["rows"], json!([["shop"]]));
    let shop_services = fixture.records.iter().filter(|r| r.destination_namespace.as_deref() == Some("shop")).count();
    assert_eq!(scalar(&shop, "SELECT count(*) FROM spans").await, json!(shop_services));

    // An error raised only on another namespace's rows must not happen: those rows never reach the
    // caller's predicates. The same query fails for an unscoped caller, so the probe is real.
    let probe = "SELECT count(*) FROM requests \
                 WHERE 1 / (CASE WHEN source_namespace = 'default' THEN 0 ELSE 1 END) = 1 \
                 AND timestamp > now() - INTERVAL '1 day'";
    assert_eq!(scalar(&shop, probe).await, json!(visible));
    let unscoped = sql_app(&fixture, viewer(None), SqlLimits::default());
    post(&unscoped, json!({ "sql": probe })).await.error(StatusCode::BAD_REQUEST, "bad_request");

    for (sql, expected) in [
        ("EXPLAIN SELECT * FROM requests", "EXPLAIN is not available to namespace-scoped tokens"),
        ("EXPLAIN ANALYZE SELECT count(*) FROM requests", "EXPLAIN is not available"),
        ("SELECT * FROM information_schema.tables", "information_schema is not available"),
    ] {
        let message = post(&shop, json!({ "sql": sql })).await.error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(expected), "{sql}: {message}");
    }
    let bank = sql_app(&fixture, viewer(Some("bank")), SqlLimits::default());
    assert_eq!(scalar(&bank, "SELECT count(*) FROM requests").await, json!(fixture.visible("bank")));
    let nobody = sql_app(&fixture, viewer(Some("ghost")), SqlLimits::default());
    assert_eq!(scalar(&nobody, "SELECT count(*) FROM requests").await, json!(0));
}

#[tokio::test]
async fn explain_hides_the_data_directory() {
    let fixture = fixture(RECORDS).await;
    let app = sql_app(&fixture, viewer(None), SqlLimits::default());
    let answer = post(&app, json!({ "sql": "EXPLAIN SELECT count(*) FROM requests WHERE status >= 500" })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let text = answer.text();
    assert!(text.contains("<data-dir>/parquet"), "the Parquet files are named relative to the data dir: {text}");
    let data_dir = fixture.dir.path().to_string_lossy().trim_start_matches('/').to_owned();
    assert!(!text.contains(&data_dir), "{text}");
}
