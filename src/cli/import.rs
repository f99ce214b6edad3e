//! `meshlens import`: access-log files (e.g. `kubectl logs POD -c istio-proxy`) into the store, through the
//! same conversion, attribution and ingest path as the collector's `POST /v1/accesslogs`.

use super::serve::{StoreArgs, attributor_for, load_mesh_config};
use anyhow::Context;
use meshlens_collector::attribution::{Attributor, ProxyIdentity};
use meshlens_collector::ingest::{Ingest, IngestError, Outcome};
use meshlens_collector::internal_events::{Format, Receiver, Telemetry};
use meshlens_collector::sources::accesslog::convert::LineBatches;
use meshlens_collector::sources::{Batch, Rejection};
use meshlens_collector::{LineFormat, LineParser};
use meshlens_model::RequestRecord;
use meshlens_store::Store;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines per store append: large enough that the WAL fsync is amortized, small enough to bound memory.
const BATCH_LINES: usize = 10_000;
/// Rejected lines listed in the summary; the count is always complete.
const LISTED_REJECTIONS: usize = 20;
/// How often a busy store is retried before the import gives up.
const BUSY_ATTEMPTS: u32 = 60;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 when every non-blank line was stored, 1 when some lines were rejected \
                        (listed in the summary on stderr), 2 when an input or the store failed.")]
pub struct ImportArgs {
    /// Format of the input lines.
    #[arg(long, value_enum, default_value_t = LineFormat::Auto)]
    format: LineFormat,

    /// The workload whose proxy wrote the log, as NAMESPACE/NAME: the source of its outbound records and
    /// the destination of its inbound ones.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = ProxyIdentity::from_workload_arg)]
    workload: Option<ProxyIdentity>,

    #[command(flatten)]
    store: StoreArgs,

    /// Mesh configuration (files or directories) whose Pods and WorkloadEntries name the peers of records
    /// by IP address.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Access-log files; `-` reads stdin.
    #[arg(value_name = "FILE", required = true)]
    inputs: Vec<PathBuf>,
}

/// Totals over all inputs.
#[derive(Debug, Default)]
struct Summary {
    read: u64,
    stored: u64,
    rejected: u64,
    /// The first rejections, with the input they came from.
    listed: Vec<(String, Rejection)>,
}

impl ImportArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(self.import())
    }

    async fn import(self) -> anyhow::Result<ExitCode> {
        let attributor = attributor_for(&load_mesh_config(&self.paths)?);
        let store = Store::open(self.store.config()).await.with_context(|| {
            format!(
                "opening the store in {} (a running `meshlens serve` holds it: send the lines to its \
                 POST /v1/accesslogs instead)",
                self.store.data_dir.display()
            )
        })?;
        let store = Arc::new(store);
        let ingest = Ingest::new(Arc::clone(&store), Arc::new(Telemetry::default()));
        let parser = LineParser::new(self.format);
        let mut summary = Summary::default();
        let mut result = Ok(());
        for path in &self.inputs {
            result = import_one(path, parser, self.workload.as_ref(), &attributor, &ingest, &mut summary).await;
            if result.is_err() {
                break;
            }
        }
        drop(ingest);
        store.close().await.context("closing the store")?;
        print_summary(&summary);
        result?;
        Ok(if summary.rejected == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
}

async fn import_one(
    path: &Path,
    parser: LineParser,
    proxy: Option<&ProxyIdentity>,
    attributor: &Attributor,
    ingest: &Ingest,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let (name, size, input): (String, Option<u64>, Box<dyn Read>) = if path.as_os_str() == "-" {
        ("<stdin>".into(), None, Box::new(io::stdin()))
    } else {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (path.display().to_string(), size, Box::new(file))
    };
    let mut progress = Progress::new(&name, size);
    let counter = CountingReader { inner: input, count: Arc::clone(&progress.bytes) };
    // Reading is blocking I/O on a runtime worker; the store's flusher runs on the other workers, and the
    // appends below yield between batches.
    let mut batches = LineBatches::new(BufReader::with_capacity(256 * 1024, counter), parser, proxy, attributor);
    while let Some(batch) = batches.next_batch(BATCH_LINES).with_context(|| format!("reading {name}"))? {
        summary.read += batch.received() as u64;
        for rejection in batch.rejected.iter().take(LISTED_REJECTIONS.saturating_sub(summary.listed.len())) {
            summary.listed.push((name.clone(), rejection.clone()));
        }
        let outcome = append_retrying(ingest, batch).await.with_context(|| format!("storing records of {name}"))?;
        summary.stored += outcome.stored as u64;
        summary.rejected += outcome.rejected as u64;
        progress.update(summary.stored);
    }
    progress.finish();
    Ok(())
}

/// An import is a batch job with no client to push back on, so a busy store is waited for.
async fn append_retrying(ingest: &Ingest, batch: Batch<RequestRecord>) -> Result<Outcome, IngestError> {
    let mut attempt = 1;
    loop {
        match ingest.requests(Receiver::Import, Format::AccessLog, "line", Instant::now(), batch.clone()).await {
            Err(e) if e.source.is_retryable() && attempt < BUSY_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(e.retry_after).await;
            }
            result => return result,
        }
    }
}

fn print_summary(summary: &Summary) {
    eprintln!("read {} lines: {} stored, {} rejected", summary.read, summary.stored, summary.rejected);
    for (name, r) in &summary.listed {
        eprintln!("  {name}:{}: {}", r.item, r.reason);
    }
    if summary.rejected > summary.listed.len() as u64 {
        eprintln!("  ... and {} more rejected lines", summary.rejected - summary.listed.len() as u64);
    }
}

/// Counts the bytes read, for the progress bar.
struct CountingReader<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal (logs and CI output stay clean).
struct Progress {
    name: String,
    size: Option<u64>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    enabled: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(name: &str, size: Option<u64>) -> Self {
        Progress {
            name: name.to_owned(),
            size,
            bytes: Arc::default(),
            enabled: io::stderr().is_terminal(),
            last_draw: None,
        }
    }

    fn update(&mut self, stored: u64) {
        if !self.enabled || self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let bytes = self.bytes.load(std::sync::atomic::Ordering::Relaxed);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let line = match self.size.filter(|&s| s > 0) {
            Some(size) => {
                let done = (bytes.min(size) * 30 / size) as usize;
                format!(
                    "{} [{}{}] {:3}% {:.1}/{:.1} MiB, {stored} records",
                    self.name,
                    "=".repeat(done),
                    " ".repeat(30 - done),
                    bytes.min(size) * 100 / size,
                    mib(bytes),
                    mib(size)
                )
            }
            None => format!("{} {:.1} MiB, {stored} records", self.name, mib(bytes)),
        };
        let mut err = io::stderr().lock();
        // Progress is cosmetic; a failed write to the terminal must not fail the import.
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K");
        }
    }
}
