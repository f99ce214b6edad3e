//! The store's behaviour end to end, run against the SQLite and the PostgreSQL catalog alike.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, Timelike, Utc};
use common::{Backend, TestEnv, scalar, table};
use meshlens_store::synth::{RequestGenerator, span_for};
use meshlens_store::{QUARANTINE_DIR, Store, StoreConfig, StoreError, Table};
use std::sync::Arc;
use std::time::Duration;

const EDGE_QUERY: &str = "SELECT source_workload, destination_service, count(*) AS n, sum(duration_ms) AS total_ms, \
    min(timestamp) AS first, max(timestamp) AS last, sum(array_length(response_flags)) AS flags \
    FROM requests GROUP BY 1, 2 ORDER BY 1, 2";

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).expect("valid hour")
}

/// A config whose flusher never fires on its own, so the test decides when data moves to Parquet.
fn manual_flush(env: &TestEnv) -> StoreConfig {
    StoreConfig {
        flush_rows: 1_000_000,
        memory_budget_bytes: 4 << 30,
        flush_interval: Duration::from_secs(3600),
        ..env.config()
    }
}

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-01T10:15:00Z").expect("time").to_utc()
}

async fn append_is_immediately_queryable(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Store::open(manual_flush(&env)).await.expect("open");
    let records = RequestGenerator::new(1, start_time(), 100).batch(1000);
    let spans: Vec<_> = records.iter().map(span_for).collect();
    store.append_requests(records).await.expect("append requests");
    store.append_spans(spans).await.expect("append spans");
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 1000);
    assert_eq!(scalar(&store, "SELECT count(*) FROM spans").await, 1000);
    let joined = "SELECT count(*) FROM requests r JOIN spans s ON r.span_id = s.span_id AND r.trace_id = s.trace_id";
    assert_eq!(scalar(&store, joined).await, 1000);
    let attrs = "SELECT count(*) FROM spans WHERE attributes LIKE '%\"component\":\"proxy\"%'";
    assert_eq!(scalar(&store, attrs).await, 1000);
    assert_eq!(store.stats().parquet_files_written, 0, "nothing was flushed");
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn flush_gives_same_results_from_parquet(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Store::open(manual_flush(&env)).await.expect("open");
    // One record per second on average: 10 000 records span about 3 hours, so several partitions.
    let mut generator = RequestGenerator::new(2, start_time(), 1);
    for _ in 0..5 {
        store.append_requests(generator.batch(2000)).await.expect("append");
    }
    let before = table(&store, EDGE_QUERY).await;
    let report = store.flush().await.expect("flush");
    assert_eq!(report.rows, 10_000);
    assert!(report.files >= 3, "one file per hour partition: {report:?}");
    assert_eq!(store.stats().buffered_rows, 0);
    assert_eq!(table(&store, EDGE_QUERY).await, before, "Parquet answers like memory did");
    assert_eq!(scalar(&store, "SELECT count(DISTINCT request_id) FROM requests").await, 10_000);

    let files = store.catalog().files(Table::Requests, None, None, None).await.expect("catalog");
    assert_eq!(files.len(), report.files);
    assert_eq!(files.iter().map(|f| f.row_count).sum::<i64>(), 10_000);
    for f in &files {
        assert!(f.path.starts_with("parquet/requests/2025-06-01/"), "{}", f.path);
        assert!(store.data_dir().join(&f.path).is_file(), "{} exists", f.path);
        assert!(f.min_time >= f.partition_hour && f.max_time < f.partition_hour + 3_600_000_000);
    }
    // Flushed WAL is gone except the segment the writer is still on.
    let segments = std::fs::read_dir(store.data_dir().join("wal"))
        .expect("wal dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal")));
    assert!(segments.count() <= 1);
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn reopen_gives_same_results(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut generator = RequestGenerator::new(3, start_time(), 2);
    let store = Store::open(manual_flush(&env)).await.expect("open");
    store.append_requests(generator.batch(3000)).await.expect("append");
    store.flush().await.expect("flush");
    store.append_requests(generator.batch(1500)).await.expect("append");
    store.append_spans(generator.batch(10).iter().map(span_for).collect()).await.expect("append spans");
    let before = table(&store, EDGE_QUERY).await;
    // Dropping without close is what a crash leaves: the last two appends exist only in the WAL.
    drop(store);

    let store = Store::open(manual_flush(&env)).await.expect("reopen");
    let report = store.recovery_report().clone();
    assert_eq!((report.records_replayed, report.rows_replayed), (2, 1510), "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(table(&store, EDGE_QUERY).await, before);
    assert_eq!(scalar(&store, "SELECT count(*) FROM spans").await, 10);
    store.close().await.expect("close flushes");

    let store = Store::open(manual_flush(&env)).await.expect("reopen after close");
    assert_eq!(store.recovery_report().records_replayed, 0, "close flushed everything");
    assert_eq!(table(&store, EDGE_QUERY).await, before);
    assert_eq!(scalar(&store, "SELECT count(DISTINCT request_id) FROM requests").await, 4500);
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn retention_drops_old_partitions(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Store::open(manual_flush(&env)).await.expect("open");
    let now = Utc::now();
    let old_hour = hour_start(now - ChronoDuration::hours(5));
    let recent_hour = hour_start(now - ChronoDuration::hours(1));
    // 1000 records a second: each batch stays within its hour.
    store.append_requests(RequestGenerator::new(4, old_hour, 1000).batch(1000)).await.expect("append old");
    store.append_requests(RequestGenerator::new(5, recent_hour, 1000).batch(1000)).await.expect("append recent");
    store.flush().await.expect("flush");
    let old_files =
        store.catalog().files(Table::Requests, None, Some(old_hour.timestamp_micros() + 3_599_999_999), None);
    let old_files = old_files.await.expect("catalog");
    assert_eq!(old_files.len(), 1);

    let report = store.apply_retention(Duration::from_secs(3 * 3600)).await.expect("retention");
    assert_eq!((report.files_removed, report.rows_removed, report.files_not_deleted), (1, 1000, 0), "{report:?}");
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 1000);
    let oldest = format!("SELECT count(*) FROM requests WHERE timestamp < '{}'", recent_hour.to_rfc3339());
    assert_eq!(scalar(&store, &oldest).await, 0);
    assert!(!store.data_dir().join(&old_files[0].path).exists(), "file deleted");
    assert!(!store.data_dir().join(&old_files[0].path).parent().expect("hour dir").exists(), "empty hour dir deleted");

    let again = store.apply_retention(Duration::from_secs(3 * 3600)).await.expect("retention");
    assert_eq!(again.files_removed, 0, "nothing left to drop");
    store.close().await.expect("close");
    env.cleanup().await;
}

/// The Arrow size of `records`: what an append of them counts against the memory budget.
fn footprint(records: &[meshlens_model::record::RequestRecord]) -> usize {
    meshlens_store::schema::requests_to_batch(records).expect("batch").get_array_memory_size()
}

/// A store with room for a batch of `first_bytes` and less than twice that: the batch alone starts no flush
/// (it stays under half the budget, and neither rows nor age trigger one), a larger batch after it does not
/// fit until a flush.
fn tight_budget(env: &TestEnv, first_bytes: usize, busy_wait: Duration) -> StoreConfig {
    StoreConfig {
        flush_rows: 1_000_000,
        memory_budget_bytes: 2 * first_bytes + 2,
        busy_wait,
        flush_interval: Duration::from_secs(3600),
        ..env.config()
    }
}

async fn backpressure_returns_busy(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut generator = RequestGenerator::new(6, start_time(), 100);
    let (first, second) = (generator.batch(6000), generator.batch(8000));
    let (first_bytes, second_bytes) = (footprint(&first), footprint(&second));
    let config = tight_budget(&env, first_bytes, Duration::ZERO);
    let budget = config.memory_budget_bytes;
    assert!(first_bytes + second_bytes > budget);
    let store = Store::open(config).await.expect("open");
    store.append_requests(first).await.expect("within budget");
    assert_eq!(store.stats().reserved_bytes, first_bytes);
    let err = store.append_requests(second.clone()).await.expect_err("over budget");
    let StoreError::Busy { requested, in_use, budget: reported } = err else { panic!("{err:?}") };
    assert_eq!((requested, in_use, reported), (second_bytes, first_bytes, budget));
    assert!(err.to_string().starts_with("busy, retry later"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 6000, "the refused batch was not stored");
    store.flush().await.expect("flush frees the budget");
    assert_eq!(store.stats().reserved_bytes, 0);
    store.append_requests(second).await.expect("fits after the flush");
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 14_000);
    store.close().await.expect("close");
    env.cleanup().await;
}

/// An append that does not fit waits: it asks for a flush, which makes room, and then goes through.
async fn an_append_over_the_budget_waits_for_a_flush(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut generator = RequestGenerator::new(9, start_time(), 100);
    let (first, second) = (generator.batch(6000), generator.batch(8000));
    // Neither size nor rows nor age would start a flush: only the waiting append does.
    let store = Store::open(tight_budget(&env, footprint(&first), Duration::from_secs(30))).await.expect("open");
    store.append_requests(first).await.expect("within budget");
    assert_eq!(store.stats().flushes, 0);
    store.append_requests(second).await.expect("room made by a flush");
    // The second batch alone is over half the budget, so a second flush may already be under way.
    assert!(store.stats().rows_flushed >= 6000, "the first batch was flushed to make room");
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 14_000);
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn time_range_pruning_skips_files(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Store::open(manual_flush(&env)).await.expect("open");
    let day = hour_start(start_time());
    for hour in 0..5 {
        let records = RequestGenerator::new(10 + hour, day + ChronoDuration::hours(hour as i64), 1000).batch(500);
        store.append_requests(records).await.expect("append");
    }
    store.flush().await.expect("flush");
    assert_eq!(store.catalog().files(Table::Requests, None, None, None).await.expect("catalog").len(), 5);

    let scanned = |s: &Store| s.stats().parquet_files_scanned;
    let before = scanned(&store);
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 2500);
    assert_eq!(scanned(&store) - before, 5, "no filter: every file");

    let from = day + ChronoDuration::hours(3);
    let to = from + ChronoDuration::hours(1);
    let sql = format!(
        "SELECT count(*) FROM requests WHERE timestamp >= '{}' AND timestamp < '{}'",
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    let before = scanned(&store);
    assert_eq!(scalar(&store, &sql).await, 500);
    assert_eq!(scanned(&store) - before, 1, "only the 4th hour's file is opened");

    let sql =
        format!("SELECT count(*) FROM requests WHERE timestamp > '{}'", (day + ChronoDuration::hours(10)).to_rfc3339());
    let before = scanned(&store);
    assert_eq!(scalar(&store, &sql).await, 0);
    assert_eq!(scanned(&store) - before, 0, "a range after all data opens nothing");

    // BETWEEN and `now()` arithmetic are folded to literals before the scan and prune too.
    let sql = format!(
        "SELECT count(*) FROM requests WHERE timestamp BETWEEN '{}' AND '{}' AND timestamp < now()",
        day.to_rfc3339(),
        (day + ChronoDuration::minutes(59)).to_rfc3339()
    );
    let before = scanned(&store);
    assert_eq!(scalar(&store, &sql).await, 500);
    assert_eq!(scanned(&store) - before, 1);
    store.close().await.expect("close");
    env.cleanup().await;
}

/// Request files hold inbound rows, then outbound rows, each in time order, and say so in their footer, so
/// that a scan of one direction skips the other's pages; the catalog's time range is still the file's.
async fn request_files_are_ordered_by_direction_then_time(backend: Backend) {
    use meshlens_model::Direction;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let env = TestEnv::new(backend).await;
    let store = Store::open(manual_flush(&env)).await.expect("open");
    // Several appends and more rows than the writer takes at once, so rows of different batches and chunks
    // interleave in the file.
    let mut records = RequestGenerator::new(3, start_time(), 100).batch(30_000);
    for (i, record) in records.iter_mut().enumerate() {
        if i % 3 == 0 {
            record.direction = Direction::Inbound;
        }
    }
    let (first, last) = (records[0].timestamp, records[records.len() - 1].timestamp);
    for chunk in records.chunks(7000) {
        store.append_requests(chunk.to_vec()).await.expect("append");
    }
    store.flush().await.expect("flush");
    let files = store.catalog().files(Table::Requests, None, None, None).await.expect("catalog");
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].min_time, files[0].max_time), (first.timestamp_micros(), last.timestamp_micros()));

    let file = std::fs::File::open(store.data_dir().join(&files[0].path)).expect("open file");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
    let sorting = builder.metadata().row_group(0).sorting_columns().cloned().unwrap_or_default();
    let schema = Table::Requests.schema();
    let sorted_by: Vec<&str> = sorting.iter().map(|c| schema.field(c.column_idx as usize).name().as_str()).collect();
    assert_eq!(sorted_by, ["direction", "timestamp"]);
    let mut rows: Vec<(String, i64)> = Vec::new();
    for batch in builder.build().expect("reader") {
        let batch = batch.expect("batch");
        let direction = batch.column_by_name("direction").expect("direction");
        let direction = direction.as_any().downcast_ref::<arrow::array::StringArray>().expect("strings");
        let time = batch.column_by_name("timestamp").expect("timestamp");
        let time = time.as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>().expect("timestamps");
        rows.extend((0..batch.num_rows()).map(|i| (direction.value(i).to_owned(), time.value(i))));
    }
    assert_eq!(rows.len(), 30_000);
    assert_eq!(rows.iter().filter(|(d, _)| d == "inbound").count(), 10_000);
    assert!(rows.windows(2).all(|w| w[0] <= w[1]), "ordered by (direction, timestamp)");
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests WHERE direction = 'inbound'").await, 10_000);
    assert_eq!(scalar(&store, "SELECT count(DISTINCT request_id) FROM requests").await, 30_000, "each row once");
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn read_only_guard_rejects_statements(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Store::open(manual_flush(&env)).await.expect("open");
    store.append_requests(RequestGenerator::new(7, start_time(), 100).batch(10)).await.expect("append");
    let copy_target = env.dir.path().join("copied.csv");
    let rejected = [
        "CREATE TABLE t AS SELECT 1".to_string(),
        "CREATE VIEW v AS SELECT * FROM requests".to_string(),
        "DROP TABLE requests".to_string(),
        "INSERT INTO requests SELECT * FROM requests".to_string(),
        "DELETE FROM requests".to_string(),
        format!("COPY (SELECT * FROM requests) TO '{}'", copy_target.display()),
        format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{}'", copy_target.display()),
        "SET datafusion.execution.batch_size = 1".to_string(),
    ];
    for sql in &rejected {
        let err = store.sql(sql).await.expect_err(sql);
        assert!(matches!(err, StoreError::Query(_)), "{sql}: {err:?}");
    }
    assert!(!copy_target.exists(), "COPY wrote nothing");
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 10, "the table is untouched");
    assert_eq!(scalar(&store, "WITH x AS (SELECT * FROM requests) SELECT count(*) FROM x").await, 10);
    store.sql("EXPLAIN SELECT * FROM requests").await.expect("EXPLAIN is read-only");
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn concurrent_appends_share_fsyncs(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let store = Arc::new(Store::open(manual_flush(&env)).await.expect("open"));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.append_requests(RequestGenerator::new(100 + i, start_time(), 100).batch(10)).await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("append");
    }
    let stats = store.stats();
    assert_eq!(stats.wal_records, 64);
    assert!(stats.wal_syncs < 64, "group commit merged appends: {stats:?}");
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 640);
    Arc::into_inner(store).expect("sole owner").close().await.expect("close");
    env.cleanup().await;
}

async fn flusher_runs_by_rows_by_size_and_by_age(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut generator = RequestGenerator::new(8, start_time(), 100);
    let (by_rows, by_size, by_age) = (generator.batch(1500), generator.batch(500), generator.batch(10));
    let config = StoreConfig {
        flush_rows: 1000,
        // Half the budget is a little less than the second batch: it is flushed for its size alone.
        memory_budget_bytes: 2 * footprint(&by_size) - 2,
        flush_interval: Duration::from_secs(3600),
        ..env.config()
    };
    let store = Store::open(config.clone()).await.expect("open");
    store.append_requests(by_rows).await.expect("append");
    wait_for(|| store.stats().rows_flushed == 1500, "a flush by rows").await;
    store.append_requests(by_size).await.expect("append");
    wait_for(|| store.stats().rows_flushed == 2000, "a flush by size").await;
    store.close().await.expect("close");

    let store =
        Store::open(StoreConfig { flush_interval: Duration::from_millis(300), ..config }).await.expect("reopen");
    store.append_requests(by_age).await.expect("append");
    wait_for(|| store.stats().rows_flushed == 10, "a flush by age").await;
    assert_eq!(store.stats().buffered_rows, 0);
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 2010);
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn wait_for(condition: impl Fn() -> bool, what: &str) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Offsets of the WAL records in a segment (each starts with the magic "MLW1").
fn record_offsets(data: &[u8]) -> Vec<usize> {
    data.windows(4).enumerate().filter(|(_, w)| w == b"MLW1").map(|(i, _)| i).collect()
}

async fn torn_tail_is_truncated(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut generator = RequestGenerator::new(9, start_time(), 100);
    let store = Store::open(manual_flush(&env)).await.expect("open");
    for _ in 0..3 {
        store.append_requests(generator.batch(100)).await.expect("append");
    }
    drop(store);
    let segment = newest_segment(env.dir.path());
    let len = std::fs::metadata(&segment).expect("segment").len();
    // Cut the last record short, as a crash in the middle of its write would.
    std::fs::OpenOptions::new().write(true).open(&segment).expect("open").set_len(len - 100).expect("truncate");

    let store = Store::open(manual_flush(&env)).await.expect("reopen");
    let report = store.recovery_report().clone();
    assert_eq!(report.torn_tails.len(), 1, "{report:?}");
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert_eq!(report.rows_replayed, 200);
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 200);
    store.append_requests(generator.batch(50)).await.expect("appends still work");
    drop(store);

    let store = Store::open(manual_flush(&env)).await.expect("reopen again");
    assert!(store.recovery_report().is_clean(), "{:?}", store.recovery_report());
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 250);
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn corrupt_middle_record_is_quarantined(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut generator = RequestGenerator::new(11, start_time(), 100);
    let store = Store::open(manual_flush(&env)).await.expect("open");
    for rows in [100, 200, 300] {
        store.append_requests(generator.batch(rows)).await.expect("append");
    }
    drop(store);
    let segment = newest_segment(env.dir.path());
    let mut data = std::fs::read(&segment).expect("segment");
    let offsets = record_offsets(&data);
    assert_eq!(offsets.len(), 3, "three records");
    data[offsets[1] + 200] ^= 0xff;
    std::fs::write(&segment, &data).expect("write corrupted segment");

    let store = Store::open(manual_flush(&env)).await.expect("reopen does not fail");
    let report = store.recovery_report().clone();
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert!(report.torn_tails.is_empty(), "{report:?}");
    let quarantined = &report.quarantined[0];
    assert_eq!(quarantined.offset as usize, offsets[1]);
    let file = quarantined.file.as_ref().expect("saved");
    assert!(file.starts_with(store.data_dir().join("wal").join(QUARANTINE_DIR)));
    assert_eq!(std::fs::read(file).expect("quarantine file"), data[offsets[1]..offsets[2]]);
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 400, "records before and after survive");
    store.append_requests(generator.batch(1)).await.expect("appends still work");
    drop(store);

    let store = Store::open(manual_flush(&env)).await.expect("reopen again");
    assert!(store.recovery_report().is_clean(), "damage is reported once: {:?}", store.recovery_report());
    assert_eq!(scalar(&store, "SELECT count(*) FROM requests").await, 401);
    store.close().await.expect("close");
    env.cleanup().await;
}

async fn read_only_store_works_next_to_a_writer(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut generator = RequestGenerator::new(12, start_time(), 100);
    let store = Store::open(manual_flush(&env)).await.expect("open");
    store.append_requests(generator.batch(700)).await.expect("append");
    store.flush().await.expect("flush");
    store.append_requests(generator.batch(300)).await.expect("append");

    let err = Store::open(manual_flush(&env)).await.expect_err("second writer");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");

    let reader = Store::open_read_only(env.config()).await.expect("read-only open");
    assert_eq!(scalar(&reader, "SELECT count(*) FROM requests").await, 1000);
    assert_eq!(table(&reader, EDGE_QUERY).await, table(&store, EDGE_QUERY).await);
    let err = reader.append_requests(generator.batch(1)).await.expect_err("read-only");
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");

    // The reader keeps its snapshot while the writer flushes: no row twice, none lost.
    store.flush().await.expect("flush");
    assert_eq!(scalar(&reader, "SELECT count(*) FROM requests").await, 1000);
    drop(reader);
    store.close().await.expect("close");
    env.cleanup().await;
}

on_both_backends!(
    append_is_immediately_queryable,
    flush_gives_same_results_from_parquet,
    reopen_gives_same_results,
    retention_drops_old_partitions,
    backpressure_returns_busy,
    time_range_pruning_skips_files,
    request_files_are_ordered_by_direction_then_time,
    read_only_guard_rejects_statements,
    concurrent_appends_share_fsyncs,
    flusher_runs_by_rows_by_size_and_by_age,
    an_append_over_the_budget_waits_for_a_flush,
    torn_tail_is_truncated,
    corrupt_middle_record_is_quarantined,
    read_only_store_works_next_to_a_writer,
);
