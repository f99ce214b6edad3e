//! Collector benchmark (not a test, not run in CI). Run it with `bench/collector.sh`, which builds the
//! release `meshlens` binary and passes it in `MESHLENS_BIN`.
//!
//! Prints, in one run, one table: access-log lines/s through `POST /v1/accesslogs` and through
//! `meshlens import`, spans/s through OTLP/HTTP protobuf and OTLP/gRPC, each measured against the real
//! `meshlens serve`/`import` process (release build, its own fresh data directory), with its peak RSS and
//! CPU time, and each as a ratio to the store's own append rate for the same records
//! (`Store::append_requests`/`append_spans` in this process, same store configuration, same batch size and
//! concurrency). See docs/benchmarks.md for what each column means.

mod data;
mod load;

use bytes::Bytes;
use load::{LoadReport, Target};
use meshlens_collector::attribution::Attributor;
use meshlens_collector::formats::LineParser;
use meshlens_collector::ingest::BUSY_RETRY_AFTER;
use meshlens_collector::sources::accesslog::convert::LineBatches;
use meshlens_collector::sources::otlp::convert;
use meshlens_model::{RequestRecord, SpanRecord};
use meshlens_store::{Store, StoreConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LINES_TARGET: f64 = 200_000.0;
const SPANS_TARGET: f64 = 100_000.0;
const RSS_TARGET_MIB: f64 = 200.0;
/// The marker `/usr/bin/time -f` prints, so its line can be told from the program's own stderr.
const TIME_FORMAT: &str = "MESHLENS_BENCH_TIME wall=%e maxrss_kib=%M user=%U sys=%S";

#[derive(Debug, Clone)]
struct Settings {
    bin: PathBuf,
    lines: usize,
    spans: usize,
    batch: usize,
    senders: usize,
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}={v}: expected a positive integer")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let bin = std::env::var_os("MESHLENS_BIN")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("MESHLENS_BIN is not set (run bench/collector.sh)"))?;
        anyhow::ensure!(bin.is_file(), "MESHLENS_BIN={} is not a file", bin.display());
        Ok(Settings {
            bin,
            lines: env_usize("LINES", 2_000_000)?,
            spans: env_usize("SPANS", 1_000_000)?,
            batch: env_usize("BATCH", 1000)?.max(1),
            senders: env_usize("SENDERS", 4)?.max(1),
        })
    }

    /// The store configuration `meshlens serve` and `import` use (they expose no store tuning flags).
    fn store_config(&self, dir: &Path) -> StoreConfig {
        StoreConfig::new(dir)
    }
}

/// One row of the result table.
#[derive(Debug, Clone)]
struct Row {
    path: String,
    items: u64,
    elapsed: Duration,
    /// CPU time of the measured process (the collector, or this process for the in-process store).
    cpu: Duration,
    /// CPU time of the load generator, when it is a separate party.
    load_cpu: Option<Duration>,
    rss_mib: Option<f64>,
    retries: u64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }
}

/// CPU time (user + system) of a process so far, from /proc/PID/stat.
fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    // USER_HZ is 100 on every mainstream Linux configuration.
    Duration::from_millis(ticks * 10)
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let work = tempfile::Builder::new().prefix("meshlens-collector-bench-").tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!(
        "meshlens collector benchmark: {} access-log lines, {} spans, {} per request, {} concurrent senders",
        settings.lines, settings.spans, settings.batch, settings.senders
    );
    println!("collector: {} (work dir {})", settings.bin.display(), work.path().display());
    let budget = settings.store_config(work.path()).memory_budget_bytes >> 20;
    println!("store: defaults of `meshlens serve` (memory budget {budget} MiB), also for the in-process baseline");

    let t = Instant::now();
    let log_bodies = data::access_log_bodies(settings.lines, settings.batch);
    let span_bodies = data::span_exports(settings.spans, settings.batch);
    println!(
        "generated {} MiB of Istio TEXT lines and {} MiB of OTLP protobuf in {:.1}s",
        log_bodies.iter().map(Bytes::len).sum::<usize>() >> 20,
        span_bodies.iter().map(Bytes::len).sum::<usize>() >> 20,
        t.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    // Access-log lines: store baseline, HTTP, import.
    let line_counts = Arc::new(log_bodies.iter().map(|b| bytecount_lines(b)).collect::<Vec<u64>>());
    let request_batches = parse_lines(&log_bodies)?;
    let baseline_requests = runtime.block_on(store_baseline(&settings, work.path(), request_batches, "requests"))?;
    rows.push(baseline_requests.clone());
    let log_bodies = Arc::new(log_bodies);
    rows.push(serve_path(
        &settings,
        &runtime,
        work.path(),
        "POST /v1/accesslogs",
        Target::AccessLogs,
        &log_bodies,
        &line_counts,
    )?);
    rows.push(import_path(&settings, &runtime, work.path(), &log_bodies)?);
    drop(log_bodies);

    // Spans: store baseline, OTLP/HTTP, OTLP/gRPC.
    let span_counts = Arc::new(span_bodies.iter().map(spans_in).collect::<anyhow::Result<Vec<u64>>>()?);
    let span_batches = convert_spans(&span_bodies)?;
    let baseline_spans = runtime.block_on(store_baseline(&settings, work.path(), span_batches, "spans"))?;
    rows.push(baseline_spans.clone());
    let span_bodies = Arc::new(span_bodies);
    rows.push(serve_path(
        &settings,
        &runtime,
        work.path(),
        "OTLP/HTTP protobuf",
        Target::OtlpHttpTraces,
        &span_bodies,
        &span_counts,
    )?);
    rows.push(serve_path(
        &settings,
        &runtime,
        work.path(),
        "OTLP/gRPC",
        Target::OtlpGrpcTraces,
        &span_bodies,
        &span_counts,
    )?);

    print_table(&rows, &baseline_requests, &baseline_spans);
    Ok(())
}

fn bytecount_lines(body: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', body).count() as u64
}

fn spans_in(body: &Bytes) -> anyhow::Result<u64> {
    let request = ExportTraceServiceRequest::decode(body.clone())?;
    Ok(request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum())
}

/// The records the collector makes of each body, with the collector's own code (default parser, no mesh
/// configuration for attribution: what `meshlens serve` without `--mesh-config` does).
fn parse_lines(bodies: &[Bytes]) -> anyhow::Result<Vec<Vec<RequestRecord>>> {
    let attributor = Attributor::default();
    bodies
        .iter()
        .map(|body| {
            let batch = LineBatches::new(&body[..], LineParser::default(), None, &attributor)
                .next_batch(usize::MAX)?
                .unwrap_or_default();
            anyhow::ensure!(batch.rejected.is_empty(), "generated lines were rejected: {:?}", &batch.rejected[..1]);
            Ok(batch.records)
        })
        .collect()
}

fn convert_spans(bodies: &[Bytes]) -> anyhow::Result<Vec<Vec<SpanRecord>>> {
    bodies
        .iter()
        .map(|body| {
            let batch = convert::spans(ExportTraceServiceRequest::decode(body.clone())?);
            anyhow::ensure!(batch.rejected.is_empty(), "generated spans were rejected: {:?}", &batch.rejected[..1]);
            Ok(batch.records)
        })
        .collect()
}

/// Records the store can append.
trait Appendable: Send + Sized + 'static {
    fn append(store: &Store, records: Vec<Self>) -> impl Future<Output = meshlens_store::Result<()>> + Send;
}

impl Appendable for RequestRecord {
    fn append(store: &Store, records: Vec<Self>) -> impl Future<Output = meshlens_store::Result<()>> + Send {
        store.append_requests(records)
    }
}

impl Appendable for SpanRecord {
    fn append(store: &Store, records: Vec<Self>) -> impl Future<Output = meshlens_store::Result<()>> + Send {
        store.append_spans(records)
    }
}

/// The store's own append rate: the same records, already converted, appended in the same batches by as
/// many concurrent appenders as there are senders, retrying "busy" after the delay the collector asks its
/// clients to wait. Timed until the last append is durable, like the senders' last acknowledgement.
async fn store_baseline<T: Appendable + Clone>(
    settings: &Settings,
    work: &Path,
    batches: Vec<Vec<T>>,
    table: &str,
) -> anyhow::Result<Row> {
    let dir = work.join(format!("baseline-{table}"));
    let store = Arc::new(Store::open(settings.store_config(&dir)).await?);
    let items: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let queue = Arc::new(Mutex::new(batches.into_iter()));
    let retries = Arc::new(AtomicU64::new(0));
    let cpu = cpu_time("self");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..settings.senders {
        let (store, queue, retries) = (store.clone(), queue.clone(), retries.clone());
        tasks.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                let Some(batch) = next else { return anyhow::Ok(()) };
                loop {
                    match T::append(&store, batch.clone()).await {
                        Ok(()) => break,
                        Err(e) if e.is_retryable() => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(BUSY_RETRY_AFTER).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time("self") - cpu;
    Arc::into_inner(store).ok_or_else(|| anyhow::anyhow!("store still shared"))?.close().await?;
    Ok(Row {
        path: format!("store append, {table} (in-process baseline)"),
        items,
        elapsed,
        cpu,
        load_cpu: None,
        rss_mib: None,
        retries: retries.load(Ordering::Relaxed),
    })
}

/// A child process under `/usr/bin/time`, whose stderr is collected by a thread.
struct Timed {
    child: std::process::Child,
    stderr: std::thread::JoinHandle<Vec<String>>,
}

impl Timed {
    fn spawn(bin: &Path, args: &[String], on_line: impl Fn(&str) + Send + 'static) -> anyhow::Result<Timed> {
        let mut child = Command::new("/usr/bin/time")
            .arg("-f")
            .arg(TIME_FORMAT)
            .arg(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("running /usr/bin/time {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
        let stderr = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                on_line(&line);
                lines.push(line);
            }
            lines
        });
        Ok(Timed { child, stderr })
    }

    /// The measured program's pid: the only child of `/usr/bin/time`.
    fn program_pid(&self) -> anyhow::Result<String> {
        let time_pid = self.child.id();
        for _ in 0..100 {
            let children = std::fs::read_to_string(format!("/proc/{time_pid}/task/{time_pid}/children"))?;
            if let Some(pid) = children.split_whitespace().next() {
                return Ok(pid.to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::bail!("/usr/bin/time started no program")
    }

    /// Waits for the exit; returns stderr and the peak RSS (MiB) and CPU time `/usr/bin/time` measured.
    fn wait(mut self) -> anyhow::Result<(Vec<String>, f64, Duration)> {
        let status = self.child.wait()?;
        let lines = self.stderr.join().map_err(|_| anyhow::anyhow!("stderr reader panicked"))?;
        let tail = || lines.iter().rev().take(20).rev().cloned().collect::<Vec<_>>().join("\n");
        anyhow::ensure!(status.success(), "{status}; stderr ends:\n{}", tail());
        let marker = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("MESHLENS_BENCH_TIME "))
            .ok_or_else(|| anyhow::anyhow!("no /usr/bin/time line in:\n{}", tail()))?
            .to_owned();
        let field = |key: &str| -> f64 {
            marker.split_whitespace().find_map(|f| f.strip_prefix(key)?.parse().ok()).unwrap_or(f64::NAN)
        };
        let cpu = Duration::from_secs_f64(field("user=") + field("sys="));
        Ok((lines, field("maxrss_kib=") / 1024.0, cpu))
    }
}

fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// Starts `meshlens serve` on free ports, drives `target` with the senders, stops it with SIGTERM and checks
/// that the store holds every acknowledged record.
fn serve_path(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    name: &str,
    target: Target,
    bodies: &Arc<Vec<Bytes>>,
    items: &Arc<Vec<u64>>,
) -> anyhow::Result<Row> {
    let dir = work.join(slug(name));
    let mut args: Vec<String> = ["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"]
        .into_iter()
        .chain(["--api-addr", "127.0.0.1:0", "--data-dir"])
        .map(str::to_owned)
        .collect();
    args.push(dir.display().to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let server = Timed::spawn(&settings.bin, &args, move |line| {
        if line.starts_with("meshlens listening ") {
            let _ = tx.lock().map(|tx| tx.send(line.to_owned()));
        }
    })?;
    let listening =
        rx.recv_timeout(Duration::from_secs(30)).map_err(|_| anyhow::anyhow!("meshlens serve did not start"))?;
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        let field = listening.split_whitespace().find_map(|f| f.strip_prefix(key));
        field.and_then(|f| f.parse().ok()).ok_or_else(|| anyhow::anyhow!("no {key} in {listening:?}"))
    };
    let to = match target {
        Target::OtlpGrpcTraces => addr("otlp_grpc=")?,
        _ => addr("otlp_http=")?,
    };
    let pid = server.program_pid()?;
    let (server_cpu, load_cpu) = (cpu_time(&pid), cpu_time("self"));
    let report: LoadReport =
        runtime.block_on(load::run(target, to, bodies.clone(), items.clone(), settings.senders))?;
    let (server_cpu, load_cpu) = (cpu_time(&pid) - server_cpu, cpu_time("self") - load_cpu);
    let expected: u64 = items.iter().sum();
    anyhow::ensure!(report.stored == expected, "{name}: {} of {expected} items acknowledged", report.stored);
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let (_, rss, _) = server.wait()?;
    let table = if let Target::AccessLogs = target { "requests" } else { "spans" };
    let stored = runtime.block_on(count_rows(settings, &dir, table))?;
    anyhow::ensure!(stored == expected, "{name}: the store holds {stored} {table}, {expected} were acknowledged");
    eprintln!(
        "  {name}: {} requests, {} retried after busy, {stored} {table} in the store",
        report.accepted, report.retries
    );
    Ok(Row {
        path: format!("{name} → meshlens serve"),
        items: expected,
        elapsed: report.elapsed,
        cpu: server_cpu,
        load_cpu: Some(load_cpu),
        rss_mib: Some(rss),
        retries: report.retries,
    })
}

/// `meshlens import FILE` of the same lines, timed from spawn to exit (opening the store, reading, and the
/// final flush and close included).
fn import_path(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    bodies: &[Bytes],
) -> anyhow::Result<Row> {
    let file = work.join("access.log");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for body in bodies {
            out.write_all(body)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let lines: u64 = bodies.iter().map(|b| bytecount_lines(b)).sum();
    let dir = work.join("import");
    let mut args = vec!["import".to_owned(), "--data-dir".into(), dir.display().to_string()];
    args.push(file.display().to_string());
    let started = Instant::now();
    let (stderr, rss, cpu) = Timed::spawn(&settings.bin, &args, |_| {})?.wait()?;
    let elapsed = started.elapsed();
    let summary = format!("read {lines} lines: {lines} stored, 0 rejected");
    anyhow::ensure!(stderr.contains(&summary), "import did not report {summary:?}: {stderr:?}");
    let stored = runtime.block_on(count_rows(settings, &dir, "requests"))?;
    anyhow::ensure!(stored == lines, "import: the store holds {stored} requests, {lines} lines were read");
    std::fs::remove_file(&file)?;
    Ok(Row {
        path: "meshlens import FILE".into(),
        items: lines,
        elapsed,
        cpu,
        load_cpu: None,
        rss_mib: Some(rss),
        retries: 0,
    })
}

async fn count_rows(settings: &Settings, dir: &Path, table: &str) -> anyhow::Result<u64> {
    let store = Store::open_read_only(settings.store_config(dir)).await?;
    let out = store.sql(&format!("SELECT count(*) AS n FROM {table}")).await?;
    let column = out.batches.first().map(|b| b.column(0).clone()).ok_or_else(|| anyhow::anyhow!("no count"))?;
    let counts = column
        .as_any()
        .downcast_ref::<meshlens_store::arrow::array::Int64Array>()
        .ok_or_else(|| anyhow::anyhow!("count(*) is not an Int64"))?;
    Ok(counts.value(0) as u64)
}

fn print_table(rows: &[Row], requests: &Row, spans: &Row) {
    println!();
    println!(
        "| path | items | wall s | items/s | vs store append | collector CPU s | CPU µs/item | load-gen CPU s | peak RSS MiB | busy retries | target | result |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|");
    for row in rows {
        let baseline = row.path == requests.path || row.path == spans.path;
        let is_spans = row.path.contains("OTLP") || row.path.contains("spans");
        let (base, target, unit) =
            if is_spans { (spans, SPANS_TARGET, "spans/s") } else { (requests, LINES_TARGET, "lines/s") };
        let rss = row.rss_mib.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        let (ratio, target_text, result) = if baseline {
            ("1.00x".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            let rate_ok = row.rate() >= target;
            let rss_ok = row.rss_mib.is_some_and(|r| r <= RSS_TARGET_MIB);
            let result = match (rate_ok, rss_ok) {
                (true, true) => "PASS".to_owned(),
                (false, true) => "FAIL (rate)".to_owned(),
                (true, false) => "FAIL (RSS)".to_owned(),
                (false, false) => "FAIL (rate, RSS)".to_owned(),
            };
            (
                format!("{:.2}x", row.rate() / base.rate()),
                format!(">= {}k {unit}, <= {RSS_TARGET_MIB:.0} MiB", target / 1000.0),
                result,
            )
        };
        if !baseline {
            // One line of bench/run.sh's combined table: bench | measure | value | baseline | its value |
            // ratio | target | verdict.
            println!(
                "summary: collector | {}, {unit} (peak RSS {rss} MiB) | {:.0} | {} | {:.0} | {ratio} | {target_text} | {}",
                row.path,
                row.rate(),
                base.path,
                base.rate(),
                if result == "PASS" { "met".to_owned() } else { format!("MISSED: {result}") }
            );
        }
        println!(
            "| {} | {} | {:.2} | {:.0} | {ratio} | {:.1} | {:.2} | {} | {rss} | {} | {target_text} | {result} |",
            row.path,
            row.items,
            row.elapsed.as_secs_f64(),
            row.rate(),
            row.cpu.as_secs_f64(),
            row.cpu.as_secs_f64() * 1e6 / row.items as f64,
            row.load_cpu.map_or_else(|| "-".to_owned(), |c| format!("{:.1}", c.as_secs_f64())),
            row.retries,
        );
    }
}
