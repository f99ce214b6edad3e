//! Store benchmark (not a test, not run in CI). Run with `bench/store.sh` (or `bench/run.sh`), which
//! provides DuckDB for the comparison; `cargo bench --workspace --bench store` alone skips the DuckDB part.
//!
//! Prints, in one run:
//! (a) durable append + flush throughput of N request records (default 5 000 000, `MESHLENS_BENCH_ROWS`)
//!     through the store, against writing the same Arrow batches straight to Parquet without WAL
//!     (same writer settings); the ratio is the price of durability;
//! (b) a group-by-edge count + p50/p99 latency query over the flushed Parquet files, through the store's
//!     DataFusion and through DuckDB on the same files; the ratio is ours over DuckDB's time.

use meshlens_store::arrow::array::RecordBatch;
use meshlens_store::schema::requests_to_batch;
use meshlens_store::synth::RequestGenerator;
use meshlens_store::{Store, StoreConfig, Table, WalCompression, parquet_writer_properties};
use parquet::arrow::ArrowWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH_ROWS: usize = 10_000;
/// Concurrent appenders: more than one, so that group commit does what it does in a collector.
const APPENDERS: usize = 4;
const QUERY_RUNS: usize = 5;

const EDGE_QUERY: &str = "SELECT source_workload, destination_service, count(*) AS requests, \
    approx_percentile_cont(duration_ms, 0.5) AS p50, approx_percentile_cont(duration_ms, 0.99) AS p99 \
    FROM requests GROUP BY 1, 2";

/// CPU time (user + system) this process used so far, from /proc/self/stat (Linux; zero elsewhere).
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
    Duration::from_millis(ticks * 10)
}

fn rate(rows: usize, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::var("MESHLENS_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000_000);
    let work = tempfile::Builder::new().prefix("meshlens-bench-").tempdir()?;
    println!("meshlens-store benchmark: {rows} request records, batches of {BATCH_ROWS}, {APPENDERS} appenders");
    println!("work dir {} (on the same disk as /tmp)", work.path().display());

    // Records -> Arrow, outside both timed sections (the records themselves would need ~8 GB).
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let mut generator = RequestGenerator::new(7, start, (rows / 7200).max(1) as u32);
    let t = Instant::now();
    let mut batches = Vec::with_capacity(rows / BATCH_ROWS + 1);
    let mut convert_time = Duration::ZERO;
    let mut left = rows;
    while left > 0 {
        let n = left.min(BATCH_ROWS);
        let records = generator.batch(n);
        let c = Instant::now();
        batches.push(requests_to_batch(&records)?);
        convert_time += c.elapsed();
        left -= n;
    }
    println!(
        "generated in {:.1}s; RequestRecord -> Arrow conversion alone: {:.0} records/s (one core)",
        t.elapsed().as_secs_f64(),
        rate(rows, convert_time)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store_dir = work.path().join("store");
    let cpu = cpu_time();
    let (store_time, flushes, wal_syncs, wal_bytes) = runtime.block_on(append_through_store(&store_dir, &batches))?;
    let store_cpu = cpu_time() - cpu;
    let raw_dir = work.path().join("raw");
    let cpu = cpu_time();
    let raw_time = write_raw_parquet(&raw_dir, &batches)?;
    let raw_cpu = cpu_time() - cpu;
    let store_rate = rate(rows, store_time);
    let raw_rate = rate(rows, raw_time);
    println!();
    println!("(a) ingest");
    println!(
        "  store, durable append + flush : {:>8.2}s  {:>10.0} records/s  ({flushes} flushes, {wal_syncs} WAL fsyncs, {} MB WAL)",
        store_time.as_secs_f64(),
        store_rate,
        wal_bytes >> 20
    );
    println!("  raw Parquet, no WAL           : {:>8.2}s  {:>10.0} records/s", raw_time.as_secs_f64(), raw_rate);
    println!(
        "  CPU used                      : store {:.1}s ({:.0}% of 2 cores' wall time), raw {:.1}s",
        store_cpu.as_secs_f64(),
        100.0 * store_cpu.as_secs_f64() / (2.0 * store_time.as_secs_f64()),
        raw_cpu.as_secs_f64()
    );
    println!(
        "  store / raw throughput        : {:.2}x   (target >= 0.5x; target rate >= 500000/s)",
        store_rate / raw_rate
    );
    let ratio = store_rate / raw_rate;
    summary(
        "durable append + flush, records/s",
        format!("{store_rate:.0}"),
        ("raw Parquet, no WAL", format!("{raw_rate:.0}")),
        ratio,
        ">= 500000/s and >= 0.5x",
        store_rate >= 500_000.0 && ratio >= 0.5,
    );
    drop(batches);

    println!();
    println!("(b) query: {EDGE_QUERY}");
    let ours = runtime.block_on(query_through_store(&store_dir))?;
    println!("  store (DataFusion), median of {QUERY_RUNS}: {:.3}s", ours.as_secs_f64());
    let glob = store_dir.join("parquet/requests/**/*.parquet");
    match duckdb_median(&glob) {
        Ok(duck) => {
            println!("  DuckDB, same files, median of {QUERY_RUNS}: {:.3}s", duck.as_secs_f64());
            let ratio = ours.as_secs_f64() / duck.as_secs_f64();
            println!("  store / DuckDB time           : {ratio:.2}x   (target <= 1.5x)");
            summary(
                &format!("edge count + p50/p99 over {rows} rows, s"),
                format!("{:.3}", ours.as_secs_f64()),
                ("DuckDB, same files", format!("{:.3}", duck.as_secs_f64())),
                ratio,
                "<= 1.5x",
                ratio <= 1.5,
            );
        }
        Err(e) => println!("  DuckDB skipped: {e}"),
    }
    Ok(())
}

async fn append_through_store(dir: &Path, batches: &[RecordBatch]) -> anyhow::Result<(Duration, u64, u64, u64)> {
    let wal_compression = match std::env::var("MESHLENS_BENCH_WAL_COMPRESSION").as_deref() {
        Ok("none") => WalCompression::None,
        Ok("zstd") => WalCompression::Zstd,
        Ok("lz4") | Err(_) => WalCompression::Lz4,
        Ok(other) => anyhow::bail!("MESHLENS_BENCH_WAL_COMPRESSION={other}: expected none, lz4 or zstd"),
    };
    println!("store config: defaults, memory budget 1 GiB, WAL compression {wal_compression:?}");
    let config = StoreConfig { memory_budget_bytes: 1 << 30, wal_compression, ..StoreConfig::new(dir) };
    let store = Arc::new(Store::open(config).await?);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for appender in 0..APPENDERS {
        let store = Arc::clone(&store);
        let mine: Vec<RecordBatch> = batches.iter().skip(appender).step_by(APPENDERS).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for batch in mine {
                loop {
                    match store.append_batch(Table::Requests, batch.clone()).await {
                        Ok(()) => break,
                        // Back-pressure: the flusher is behind; a collector would retry too.
                        Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(2)).await,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    store.flush().await?;
    let elapsed = t.elapsed();
    let stats = store.stats();
    Arc::into_inner(store).ok_or_else(|| anyhow::anyhow!("store still shared"))?.close().await?;
    Ok((elapsed, stats.flushes, stats.wal_syncs, stats.wal_bytes))
}

/// The same batches straight to Parquet: the store's writer settings, one file per default flush size,
/// no WAL, no sort, no catalog.
fn write_raw_parquet(dir: &Path, batches: &[RecordBatch]) -> anyhow::Result<Duration> {
    std::fs::create_dir_all(dir)?;
    let props = parquet_writer_properties(Table::Requests, StoreConfig::default().row_group_rows)?;
    let rows_per_file = StoreConfig::default().flush_rows;
    let t = Instant::now();
    let mut file_index = 0;
    let mut writer: Option<(ArrowWriter<std::fs::File>, usize)> = None;
    for batch in batches {
        if writer.is_none() {
            let path: PathBuf = dir.join(format!("{file_index:06}.parquet"));
            file_index += 1;
            writer =
                Some((ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), Some(props.clone()))?, 0));
        }
        if let Some((w, written)) = writer.as_mut() {
            w.write(batch)?;
            *written += batch.num_rows();
            if *written >= rows_per_file
                && let Some((w, _)) = writer.take()
            {
                w.into_inner()?.sync_all()?;
            }
        }
    }
    if let Some((w, _)) = writer.take() {
        w.into_inner()?.sync_all()?;
    }
    Ok(t.elapsed())
}

async fn query_through_store(dir: &Path) -> anyhow::Result<Duration> {
    let store = Store::open_read_only(StoreConfig::new(dir)).await?;
    let warm = store.sql(EDGE_QUERY).await?;
    println!("  {} edges", warm.num_rows());
    let mut times = Vec::new();
    for _ in 0..QUERY_RUNS {
        let t = Instant::now();
        store.sql(EDGE_QUERY).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[QUERY_RUNS / 2])
}

fn duckdb_median(glob: &Path) -> anyhow::Result<Duration> {
    let python = std::env::var("MESHLENS_BENCH_PYTHON")
        .map_err(|_| anyhow::anyhow!("MESHLENS_BENCH_PYTHON is not set (run bench/store.sh)"))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_query.py");
    let out = std::process::Command::new(python).arg(script).arg(glob).arg(QUERY_RUNS.to_string()).output()?;
    if !out.status.success() {
        anyhow::bail!("duckdb script failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    print!("{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout)?;
    let seconds: f64 = stdout.trim().lines().last().unwrap_or_default().trim().parse()?;
    Ok(Duration::from_secs_f64(seconds))
}

/// One line of bench/run.sh's combined table: `summary: bench | measure | value | baseline | its value |
/// ratio | target | verdict`.
fn summary(measure: &str, value: String, baseline: (&str, String), ratio: f64, target: &str, met: bool) {
    let verdict = if met { "met" } else { "MISSED" };
    println!(
        "summary: store | {measure} | {value} | {} | {} | {ratio:.2}x | {target} | {verdict}",
        baseline.0, baseline.1
    );
}
