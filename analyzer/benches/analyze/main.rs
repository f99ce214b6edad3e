//! Analyzer benchmark (not a test, not run in CI): the full traffic analysis over millions of Bookinfo
//! request records in a real store, against DuckDB running the same aggregations as SQL over the same
//! Parquet files. Run it with `bench/analyzer.sh`, which builds the release `meshlens` binary and provides
//! DuckDB; see docs/benchmarks.md.
//!
//! Once per data directory it generates `MESHLENS_BENCH_ROWS` records (default 10 000 000) of Bookinfo
//! traffic ([`bookinfo`]) through the store (WAL, Parquet flush, SQLite catalog) and caches them; later
//! runs reuse them. Then, interleaved over `MESHLENS_BENCH_ROUNDS` rounds (default 5), it times:
//!
//! 1. `meshlens analyze --data-dir DIR -f <Bookinfo config> --window Nh -o json`, the release binary end to
//!    end (process start, config load, store open, every query, report, JSON on stdout);
//! 2. the library call `meshlens_analyzer::traffic::analyze` on the store's `SessionContext` (store open
//!    included), on a two-worker runtime;
//! 3. DuckDB (`bench/analyzer/duckdb_analyze.py`, one connection per round) running the same
//!    aggregations as SQL over the store's Parquet files, results fetched into Python.
//!
//! and prints one table with the medians and the ratios to DuckDB, then the targets (≤ 1.5x DuckDB,
//! < 5 s) and a cross-check that both sides counted the same requests.
//!
//! `MESHLENS_BENCH_EXPLAIN=FILE` profiles instead: each SQL statement of FILE runs under `EXPLAIN ANALYZE`
//! on the same store (bench/analyzer/queries.sql holds the analyzer's queries).

mod bookinfo;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use meshlens_analyzer::traffic::{self, TrafficOptions, TrafficReport, Window};
use meshlens_model::mesh::{LoadReport, MeshConfig};
use meshlens_store::schema::requests_to_batch;
use meshlens_store::{Store, StoreConfig, Table};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bumped whenever the generator or the store layout changes, so that cached data is regenerated.
const DATA_VERSION: u32 = 1;
const BATCH_ROWS: usize = 10_000;
/// Span of the generated traffic: several hour partitions, as a store holding a morning's traffic has.
const SPAN_HOURS: i64 = 3;
/// Records per user request on average (measured from the generator), to spread them over the span.
const RECORDS_PER_USER_REQUEST: f64 = 6.0;

/// The Bookinfo sample's configuration (tests/fixtures) plus the benchmark's policies.
const CONFIG_FILES: [&str; 4] = [
    "tests/fixtures/istio-samples/bookinfo/platform/kube/bookinfo.yaml",
    "tests/fixtures/istio-samples/bookinfo/networking/bookinfo-gateway.yaml",
    "tests/fixtures/istio-samples/bookinfo/networking/destination-rule-all-mtls.yaml",
    "bench/analyzer/bookinfo-policies.yaml",
];

/// What a data directory holds, written next to the store once it is complete.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct DataInfo {
    version: u32,
    rows: usize,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}={v}: not a valid value")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let rows: usize = env_or("MESHLENS_BENCH_ROWS", 10_000_000)?;
    let rounds: usize = env_or("MESHLENS_BENCH_ROUNDS", 5)?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
    let data_root: PathBuf = match std::env::var_os("MESHLENS_BENCH_DATA") {
        Some(dir) => dir.into(),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache/meshlens-bench"),
    };
    let data_dir = data_root.join(format!("analyzer-bookinfo-{rows}"));
    let config_files: Vec<PathBuf> = CONFIG_FILES.iter().map(|f| workspace.join(f)).collect();
    let binary = std::env::var_os("MESHLENS_BIN").map(PathBuf::from);
    let python = std::env::var_os("MESHLENS_BENCH_PYTHON").map(PathBuf::from);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let info = runtime.block_on(ensure_data(&data_dir, rows))?;
    // The window reaches from now back past the first record, with an hour to spare for the time the
    // rounds take (the binary's window always ends when it starts).
    let now = Utc::now();
    let hours = (now - info.first).num_hours() + 2;
    let window = Window { start: now - chrono::Duration::hours(hours), end: now + chrono::Duration::hours(1) };

    let mesh = {
        let load = LoadReport::load_paths(&config_files);
        if !load.errors.is_empty() {
            bail!("the benchmark's config does not load: {:?}", load.errors);
        }
        MeshConfig::new(load.resources)
    };
    let machine = machine_description();
    println!("meshlens analyzer benchmark, {}", Utc::now().format("%Y-%m-%d %H:%M UTC"));
    println!("machine: {machine}");
    println!(
        "data: {} request records of Bookinfo traffic, {} to {}, store in {}",
        info.rows,
        info.first.format("%Y-%m-%d %H:%M"),
        info.last.format("%H:%M UTC"),
        data_dir.display()
    );
    println!(
        "store: {} Parquet files, {} MB",
        parquet_files(&data_dir)?.len(),
        parquet_files(&data_dir)?.iter().map(|(_, size)| size).sum::<u64>() >> 20
    );
    println!("config: {}", CONFIG_FILES.join(" "));

    if let Some(file) = std::env::var_os("MESHLENS_BENCH_EXPLAIN") {
        return runtime.block_on(explain(&data_dir, &workspace.join(file), window));
    }
    let mut duck = match &python {
        Some(python) => Some(DuckDb::start(python, &workspace, &data_dir)?),
        None => {
            println!("DuckDB skipped: MESHLENS_BENCH_PYTHON is not set (run bench/analyzer.sh)");
            None
        }
    };
    if binary.is_none() {
        println!("binary skipped: MESHLENS_BIN is not set (run bench/analyzer.sh)");
    }
    let binary_args = |binary: &Path| {
        let mut command = Command::new(binary);
        command.current_dir(&workspace).arg("analyze").arg("--data-dir").arg(&data_dir);
        // The same paths the library loads, so that findings cite the same origins.
        for file in &config_files {
            command.arg("-f").arg(file);
        }
        command.args(["--window", &format!("{hours}h"), "-o", "json"]);
        command
    };
    if let Some(binary) = &binary {
        let command = binary_args(binary);
        let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        println!("binary: {} {}", binary.display(), args.join(" "));
    }
    println!("rounds: {rounds}, interleaved (binary, library, DuckDB), after one warm-up round");
    println!();

    // (wall, CPU) per measured round.
    let mut binary_times = Vec::new();
    let mut library_times = Vec::new();
    let mut duck_times = Vec::new();
    let mut binary_report: Option<serde_json::Value> = None;
    let mut library_report: Option<TrafficReport> = None;
    let mut duck_figures: Option<serde_json::Value> = None;
    for round in 0..=rounds {
        let warm_up = round == 0;
        if let Some(binary) = &binary {
            let (t, cpu) = (Instant::now(), cpu_times().1);
            let output = binary_args(binary).stderr(Stdio::inherit()).output()?;
            let elapsed = (t.elapsed(), cpu_times().1.saturating_sub(cpu));
            if !matches!(output.status.code(), Some(0 | 1)) {
                bail!("meshlens analyze failed: {}", output.status);
            }
            if warm_up {
                binary_report = Some(serde_json::from_slice(&output.stdout).context("meshlens analyze output")?);
            } else {
                binary_times.push(elapsed);
            }
        }
        let (t, cpu) = (Instant::now(), cpu_times().0);
        let report = runtime.block_on(analyze_library(&data_dir, &mesh, window))?;
        let elapsed = (t.elapsed(), cpu_times().0.saturating_sub(cpu));
        if warm_up {
            library_report = Some(report);
        } else {
            library_times.push(elapsed);
        }
        if let Some(duck) = duck.as_mut() {
            let (elapsed, figures) = duck.run(window)?;
            if warm_up {
                duck_figures = Some(figures);
            } else {
                duck_times.push(elapsed);
            }
        }
    }
    if let Some(duck) = duck {
        duck.stop()?;
    }

    let walls = |times: &[(Duration, Duration)]| times.iter().map(|t| t.0).collect::<Vec<_>>();
    let cpus = |times: &[(Duration, Duration)]| times.iter().map(|t| t.1).collect::<Vec<_>>();
    let duck_median = (!duck_times.is_empty()).then(|| (median(&walls(&duck_times)), median(&cpus(&duck_times))));
    println!("| run | median wall s | min | max | median CPU s | wall vs DuckDB | CPU vs DuckDB |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    let line = |name: &str, times: &[(Duration, Duration)]| {
        if times.is_empty() {
            return;
        }
        let wall = walls(times);
        let (m, cpu) = (median(&wall), median(&cpus(times)));
        let ratio = |ours: Duration, theirs: Option<Duration>| {
            theirs.map_or("-".to_owned(), |d| format!("{:.2}x", ours.as_secs_f64() / d.as_secs_f64()))
        };
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.2} | {} | {} |",
            m.as_secs_f64(),
            wall.iter().min().unwrap_or(&m).as_secs_f64(),
            wall.iter().max().unwrap_or(&m).as_secs_f64(),
            cpu.as_secs_f64(),
            ratio(m, duck_median.map(|d| d.0)),
            ratio(cpu, duck_median.map(|d| d.1)),
        );
    };
    line("meshlens analyze (release binary, end to end)", &binary_times);
    line("traffic::analyze (library, store open + analysis)", &library_times);
    line("DuckDB, same aggregations as SQL (baseline)", &duck_times);
    println!();

    if let (Some((duck, _)), false) = (duck_median, binary_times.is_empty()) {
        let ours = median(&walls(&binary_times)).as_secs_f64();
        let ratio = ours / duck.as_secs_f64();
        println!(
            "targets (binary end to end, wall): <= 1.5x DuckDB: {ratio:.2}x ({}); < 5 s on 2 cores: {ours:.2} s ({})",
            if ratio <= 1.5 { "met" } else { "MISSED" },
            if ours < 5.0 { "met" } else { "MISSED" }
        );
        // One line of bench/run.sh's combined table: bench | measure | value | baseline | its value | ratio |
        // target | verdict.
        println!(
            "summary: analyzer | meshlens analyze over {} records, wall s | {ours:.2} | DuckDB, same aggregations | {:.2} | {ratio:.2}x | <= 1.5x and < 5 s | {}",
            info.rows,
            duck.as_secs_f64(),
            if ratio <= 1.5 && ours < 5.0 { "met" } else { "MISSED" }
        );
    }
    if let Some(report) = &library_report {
        let routed: u64 = report.routes.routes.iter().map(|r| r.requests).sum();
        println!(
            "report: {} findings, {} mTLS edges, {} routes ({routed} requests), {} services, {} recommendations",
            report.findings.len(),
            report.mtls.edges.len(),
            report.routes.routes.len(),
            report.resilience.services.len(),
            report.recommendations.len()
        );
        let mut codes: Vec<&str> = report.findings.iter().map(|f| f.code.as_str()).collect();
        codes.dedup();
        println!("finding codes: {}", codes.join(" "));
        if let Some(binary) = &binary_report {
            let library = serde_json::to_value(&report.findings)?;
            let same = binary["findings"] == library;
            println!("binary and library findings identical: {same}");
            if !same {
                let (ours, theirs) = (binary["findings"].as_array(), library.as_array());
                let first = ours.zip(theirs).and_then(|(a, b)| a.iter().zip(b).find(|(x, y)| x != y));
                match first {
                    Some((binary, library)) => println!("first difference:\n  binary:  {binary}\n  library: {library}"),
                    None => println!("the lists differ in length"),
                }
            }
        }
        if let Some(figures) = &duck_figures {
            cross_check(report, figures);
        }
    }
    Ok(())
}

/// CPU time (user + system) used so far by this process, and by its children that have been waited for,
/// from /proc/self/stat (Linux; zero elsewhere).
fn cpu_times() -> (Duration, Duration) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return (Duration::ZERO, Duration::ZERO) };
    // Fields after the parenthesised command name: utime, stime, cutime, cstime are the 12th to 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|v| v.parse().ok()).collect();
    // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
    let ticks =
        |i: usize, j: usize| Duration::from_millis((fields.get(i).unwrap_or(&0) + fields.get(j).unwrap_or(&0)) * 10);
    (ticks(0, 1), ticks(2, 3))
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Compares totals both sides computed independently: a benchmark of two programs that disagree would
/// measure nothing.
fn cross_check(report: &TrafficReport, duck: &serde_json::Value) {
    let overall = &report.mtls.overall;
    let ours = serde_json::json!({
        "mtls_requests": overall.requests, "mutual": overall.mutual, "plaintext": overall.plaintext,
        "unknown": overall.unknown,
        "client_requests": report.resilience.services.iter().map(|s| s.requests).sum::<u64>(),
        "server_requests": report.resilience.services.iter().map(|s| s.retries.requests).sum::<u64>(),
        "retried": report.resilience.services.iter().map(|s| s.retries.retried).sum::<u64>(),
    });
    let mut all_same = true;
    for (key, value) in ours.as_object().into_iter().flatten() {
        let theirs = &duck[key];
        if theirs != value {
            all_same = false;
            println!("cross-check MISMATCH {key}: meshlens {value}, DuckDB {theirs}");
        }
    }
    if all_same {
        println!("cross-check with DuckDB: same totals ({ours})");
    }
}

/// Profiling aid: runs each statement of `file` (separated by `;`; `$WINDOW` stands for the window's SQL
/// condition) in a session on the store, `EXPLAIN ANALYZE`d unless it is a `SET`, and prints the plans
/// with per-operator times and the wall time of each statement.
async fn explain(data_dir: &Path, file: &Path, window: Window) -> anyhow::Result<()> {
    let store = Store::open_read_only(StoreConfig::new(data_dir)).await?;
    let ctx = store.session_context();
    let condition = format!(
        "timestamp >= '{}' AND timestamp < '{}'",
        window.start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        window.end.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let text: String = text.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
    for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let statement = statement.replace("$WINDOW", &condition);
        let is_set = statement.to_ascii_uppercase().starts_with("SET");
        let sql = if is_set { statement.clone() } else { format!("EXPLAIN ANALYZE {statement}") };
        let t = Instant::now();
        let batches = ctx.sql(&sql).await?.collect().await?;
        let elapsed = t.elapsed();
        println!("---- {:.3} s: {}", elapsed.as_secs_f64(), statement.split_whitespace().collect::<Vec<_>>().join(" "));
        if !is_set {
            println!("{}", meshlens_store::arrow::util::pretty::pretty_format_batches(&batches)?);
        }
    }
    Ok(())
}

async fn analyze_library(data_dir: &Path, mesh: &MeshConfig, window: Window) -> anyhow::Result<TrafficReport> {
    let store = Store::open_read_only(StoreConfig::new(data_dir)).await?;
    Ok(traffic::analyze(&store.session_context(), mesh, window, &TrafficOptions::default()).await?)
}

/// Uses the data directory's store when it holds what this version generates, else (re)generates it.
async fn ensure_data(dir: &Path, rows: usize) -> anyhow::Result<DataInfo> {
    let info_path = dir.join("bench-data.json");
    if let Ok(text) = std::fs::read_to_string(&info_path)
        && let Ok(info) = serde_json::from_str::<DataInfo>(&text)
        && info.version == DATA_VERSION
        && info.rows == rows
    {
        return Ok(info);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing stale bench data in {}", dir.display()))?;
    }
    println!("generating {rows} Bookinfo request records into {} (once; later runs reuse them)", dir.display());
    let t = Instant::now();
    let span = chrono::Duration::hours(SPAN_HOURS);
    let start = Utc::now() - span - chrono::Duration::minutes(5);
    let rate = rows as f64 / RECORDS_PER_USER_REQUEST / span.num_seconds() as f64;
    let mut traffic = bookinfo::BookinfoTraffic::new(42, start, rate);
    let config = StoreConfig { memory_budget_bytes: 1 << 30, ..StoreConfig::new(dir) };
    let store = Arc::new(Store::open(config).await?);
    let mut written = 0;
    let mut first = None;
    let mut last = start;
    let mut records = Vec::with_capacity(BATCH_ROWS + 64);
    while written < rows {
        records.clear();
        while records.len() < BATCH_ROWS.min(rows - written) {
            traffic.next_into(&mut records);
        }
        records.truncate(rows - written);
        for r in &records {
            first = Some(first.map_or(r.timestamp, |f: DateTime<Utc>| f.min(r.timestamp)));
            last = last.max(r.timestamp);
        }
        let batch = requests_to_batch(&records)?;
        loop {
            match store.append_batch(Table::Requests, batch.clone()).await {
                Ok(()) => break,
                // Back-pressure: the flusher is behind.
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => return Err(e.into()),
            }
        }
        written += records.len();
    }
    store.flush().await?;
    Arc::into_inner(store).context("store still shared")?.close().await?;
    let info = DataInfo { version: DATA_VERSION, rows, first: first.unwrap_or(start), last };
    std::fs::write(&info_path, serde_json::to_string_pretty(&info)?)?;
    println!("generated in {:.0} s, last user request at {}", t.elapsed().as_secs_f64(), info.last);
    Ok(info)
}

/// The store's Parquet files with their sizes.
fn parquet_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("parquet/requests")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push((path, entry.metadata()?.len()));
            }
        }
    }
    Ok(out)
}

fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} cores, {model}; load average {}", load.join(" "))
}

/// A Python process running `bench/analyzer/duckdb_analyze.py`: one line in (the window), one JSON line out
/// (seconds and the cross-check figures) per round.
struct DuckDb {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DuckDb {
    fn start(python: &Path, workspace: &Path, data_dir: &Path) -> anyhow::Result<DuckDb> {
        let glob = data_dir.join("parquet/requests/**/*.parquet");
        let mut child = Command::new(python)
            .arg(workspace.join("bench/analyzer/duckdb_analyze.py"))
            .arg(glob)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the DuckDB script")?;
        let stdin = child.stdin.take().context("DuckDB stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("DuckDB stdout")?);
        Ok(DuckDb { child, stdin, stdout })
    }

    /// One round: (wall, CPU) time and the cross-check figures.
    fn run(&mut self, window: Window) -> anyhow::Result<((Duration, Duration), serde_json::Value)> {
        let micros = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        writeln!(self.stdin, "{} {}", micros(window.start), micros(window.end))?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the DuckDB script exited");
        }
        let answer: serde_json::Value = serde_json::from_str(&line).context("DuckDB script output")?;
        let seconds = |key: &str| answer[key].as_f64().map(Duration::from_secs_f64).context("DuckDB script: no times");
        Ok(((seconds("seconds")?, seconds("cpu_seconds")?), answer["figures"].clone()))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin);
        self.child.wait()?;
        Ok(())
    }
}
