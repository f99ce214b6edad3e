//! `meshlens analyze`: traffic analyses (mTLS coverage, route usage, resilience gaps, recommendations) over
//! a time window, from the store or straight from access-log files.
//!
//! With `--logs`, each file is read as the access log of one proxy: `NAMESPACE/WORKLOAD=FILE`, or a file
//! named `NAMESPACE__WORKLOAD.log`, says whose. Knowing the writer, and the pod IPs in the configuration,
//! fills what a text line does not say, by the collector's attribution rules: the writer is the source of
//! its outbound requests and the destination of its inbound ones, the peer is the workload owning the
//! remote address, and a gateway's outbound requests are reported as the gateway's.

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use clap::ValueEnum;
use meshlens_analyzer::traffic::{self, TrafficOptions, TrafficReport, Window};
use meshlens_analyzer::{Finding, Level};
use meshlens_collector::attribution::{Attributor, ProxyIdentity, workload_from_pod_name};
use meshlens_collector::{LineFormat, LineParser, LineReader};
use meshlens_model::mesh::meta::IntOrString;
use meshlens_model::mesh::meta::labels_match;
use meshlens_model::mesh::{Duration, Kind, LoadError, MeshConfig, MeshSettings, Resource, WorkloadRef};
use meshlens_model::names::ClusterName;
use meshlens_model::{Direction, RequestRecord};
use meshlens_store::{Store, StoreConfig};
use serde::Serialize;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "Bad configuration documents and unreadable log lines are reported with their \
    location (and listed under `skipped` in JSON); the analysis runs on what loaded.\n\n\
    Exit status: 0 when no finding reaches --fail-on; 1 when one does, or input was skipped; 2 when \
    meshlens could not run (e.g. no store in --data-dir). Finding codes: docs/findings.md (ML2xxx).")]
pub struct AnalyzeArgs {
    /// Files or directories (searched recursively for .yaml, .yml and .json) with the mesh configuration;
    /// `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,

    /// Analyze these access-log files instead of the store. `NAMESPACE/WORKLOAD=FILE` names the workload
    /// whose proxy wrote the file; without it a file named `NAMESPACE__WORKLOAD.log` says so.
    #[arg(long, value_name = "[NAMESPACE/WORKLOAD=]FILE", num_args = 1.., conflicts_with_all = ["data_dir", "database_url"])]
    logs: Vec<String>,

    /// Store data directory (read-only; works next to a running collector).
    #[arg(long, value_name = "DIR", env = "MESHLENS_DATA_DIR", default_value = "./meshlens-data")]
    data_dir: PathBuf,

    /// Store catalog database, when not the SQLite file in the data directory (`postgres://...`,
    /// `sqlite:PATH`).
    #[arg(long, value_name = "URL", env = "MESHLENS_DATABASE_URL")]
    database_url: Option<String>,

    /// Length of the window analyzed (`30m`, `1h`, `7d` as `168h`): it ends now for the store, and at the
    /// last record for --logs (which analyzes every record by default).
    #[arg(long, value_name = "DURATION")]
    window: Option<Duration>,

    /// Istio MeshConfig file (sets e.g. the root namespace).
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,

    /// Requests a PERMISSIVE namespace must have received, all mutual, to be called ready for STRICT.
    #[arg(long, value_name = "N", default_value_t = TrafficOptions::default().strict_ready_min_requests)]
    strict_ready_min_requests: u64,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    /// Exit with status 1 when a finding is at this level or above.
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    fail_on: FailOn,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// Sections of aligned columns, for a terminal.
    Table,
    /// `{"window", "mtls", "routes", "resilience", "recommendations", "findings", "skipped"}`.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailOn {
    Error,
    Warning,
    Info,
}

impl From<FailOn> for Level {
    fn from(fail_on: FailOn) -> Level {
        match fail_on {
            FailOn::Error => Level::Error,
            FailOn::Warning => Level::Warning,
            FailOn::Info => Level::Info,
        }
    }
}

/// Default window for the store.
const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(1);
/// Most skipped log lines listed one by one; the rest are counted.
const MAX_LISTED_LINES: usize = 100;

/// Input that was not analyzed.
#[derive(Debug, Default, Serialize)]
struct Skipped {
    /// Configuration documents that failed to load, located.
    config_errors: Vec<serde_json::Value>,
    /// Well-formed documents of kinds meshlens does not model.
    unmodelled_documents: usize,
    /// Log lines that did not parse: `FILE:LINE: reason` (the first [`MAX_LISTED_LINES`]).
    log_lines: Vec<String>,
    log_lines_total: u64,
    /// Parsed records outside the window.
    records_outside_window: usize,
}

impl Skipped {
    fn anything(&self) -> bool {
        !self.config_errors.is_empty() || self.log_lines_total > 0
    }
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a TrafficReport,
    skipped: &'a Skipped,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let mut load = super::config::load(&args.paths)?;
    let settings = match &args.mesh_config {
        None => MeshSettings::default(),
        Some(path) => MeshSettings::load(path).unwrap_or_else(|error| {
            load.errors.push(*error);
            MeshSettings::default()
        }),
    };
    let mut skipped = Skipped {
        config_errors: load.errors.iter().map(load_error_json).collect(),
        unmodelled_documents: load.skipped.len(),
        ..Default::default()
    };
    for error in &load.errors {
        eprintln!("error: {error}");
    }
    let mesh = MeshConfig::new(load.resources).with_root_namespace(&settings.root_namespace);
    let options = TrafficOptions { strict_ready_min_requests: args.strict_ready_min_requests, ..Default::default() };
    let window_length =
        args.window.map(|w| TimeDelta::from_std(w.as_std()).context("--window is too long")).transpose()?;

    // Multi-threaded: DataFusion runs each query's partitions (and the analyses' queries) as tasks, so
    // worker threads are what lets the analysis use every core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let report = runtime.block_on(async {
        if args.logs.is_empty() {
            let mut config = StoreConfig::new(&args.data_dir);
            config.database_url.clone_from(&args.database_url);
            let store = Store::open_read_only(config)
                .await
                .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
            let end = Utc::now();
            let start = end.checked_sub_signed(window_length.unwrap_or(DEFAULT_WINDOW)).unwrap_or(DateTime::UNIX_EPOCH);
            let window = Window { start, end };
            Ok::<_, anyhow::Error>(traffic::analyze(&store.session_context(), &mesh, window, &options).await?)
        } else {
            let records = read_logs(&args.logs, &mesh, &mut skipped)?;
            let window = logs_window(&records, window_length);
            skipped.records_outside_window =
                records.iter().filter(|r| r.timestamp < window.start || r.timestamp >= window.end).count();
            let ctx = traffic::requests_context(&records)?;
            Ok(traffic::analyze(&ctx, &mesh, window, &options).await?)
        }
    })?;

    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&Output { report: &report, skipped: &skipped })?;
            writeln!(out, "{json}").context("writing output")?;
        }
        OutputFormat::Table => write_table(&mut out, &report, &skipped).context("writing output")?,
    }
    let threshold = Level::from(args.fail_on);
    let failed = skipped.anything() || report.findings.iter().any(|f| f.level >= threshold);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn load_error_json(error: &LoadError) -> serde_json::Value {
    serde_json::json!({
        "location": error.to_string(), "file": error.file, "line": error.line, "document": error.document,
        "resource": error.resource, "field": error.field, "message": error.message,
    })
}

/// Every record by default; with a length, that much time up to the last record.
fn logs_window(records: &[RequestRecord], length: Option<TimeDelta>) -> Window {
    let first = records.iter().map(|r| r.timestamp).min().unwrap_or(DateTime::UNIX_EPOCH);
    let last = records.iter().map(|r| r.timestamp).max().unwrap_or(DateTime::UNIX_EPOCH);
    // The end is exclusive: one microsecond (the store's resolution) past the last record.
    let end = last.checked_add_signed(TimeDelta::microseconds(1)).unwrap_or(last);
    let start = length.map_or(first, |length| end.checked_sub_signed(length).unwrap_or(DateTime::UNIX_EPOCH));
    Window { start, end }
}

/// The proxy that wrote a log file: its identity for the collector's attribution rules, and its workload
/// in the configuration (for what those rules do not cover yet, see [`complete`]).
#[derive(Debug)]
struct Writer {
    identity: ProxyIdentity,
    workload: Option<WorkloadRef>,
}

/// `ns/workload=FILE`, or `FILE` named `ns__workload.log`.
fn parse_log_spec(spec: &str) -> (Option<ProxyIdentity>, PathBuf) {
    if let Some((who, file)) = spec.split_once('=')
        && let Ok(identity) = ProxyIdentity::from_workload_arg(who)
    {
        return (Some(identity), PathBuf::from(file));
    }
    let path = PathBuf::from(spec);
    let from_name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|stem| stem.split_once("__"))
        .and_then(|(namespace, name)| ProxyIdentity::from_workload_arg(&format!("{namespace}/{name}")).ok());
    (from_name, path)
}

/// The writer's workload (a Deployment, or a Pod named after it) and whether it is a gateway: a Gateway
/// selects it, or it carries `istio: ingressgateway`, the label Istio's Ingress support selects. A
/// gateway's requests are reported as the gateway's.
fn writer(mesh: &MeshConfig, workloads: &[WorkloadRef], mut identity: ProxyIdentity) -> Writer {
    let workload = workloads
        .iter()
        .find(|w| {
            Some(w.namespace.as_str()) == identity.namespace.as_deref()
                && (Some(w.name.as_str()) == identity.workload.as_deref()
                    || Some(workload_from_pod_name(&w.name).as_str()) == identity.workload.as_deref())
        })
        .cloned();
    identity.gateway = workload.as_ref().is_some_and(|w| {
        w.labels.get("istio").is_some_and(|v| v == "ingressgateway")
            || mesh.of_kind(Kind::Gateway).any(|loaded| match &loaded.resource {
                Resource::Gateway(gw) => !gw.spec.selector.is_empty() && labels_match(&gw.spec.selector, &w.labels),
                _ => false,
            })
    });
    Writer { identity, workload }
}

fn read_logs(specs: &[String], mesh: &MeshConfig, skipped: &mut Skipped) -> anyhow::Result<Vec<RequestRecord>> {
    let workloads = mesh.workloads();
    let attributor = Attributor::new(Some(mesh));
    let parser = LineParser::new(LineFormat::Auto);
    let mut records = Vec::new();
    for spec in specs {
        let (who, path) = parse_log_spec(spec);
        let writer = who.map(|identity| writer(mesh, &workloads, identity));
        let name = path.display().to_string();
        let file = File::open(&path).with_context(|| format!("opening {name}"))?;
        let mut lines = LineReader::new(BufReader::new(file));
        while let Some((number, line)) = lines.next_line().with_context(|| format!("reading {name}"))? {
            let parsed = match line {
                Ok(bytes) if bytes.trim_ascii().is_empty() => continue,
                Ok(bytes) => parser.parse_bytes(bytes),
                Err(err) => Err(err),
            };
            match parsed {
                Ok(mut record) => {
                    attributor.attribute(&mut record, writer.as_ref().map(|w| &w.identity));
                    if let Some(writer) = &writer {
                        complete(&mut record, writer, mesh);
                    }
                    records.push(record);
                }
                Err(err) => {
                    let message = format!("{name}:{number}: {err}");
                    eprintln!("error: {message}");
                    skipped.log_lines_total += 1;
                    if skipped.log_lines.len() < MAX_LISTED_LINES {
                        skipped.log_lines.push(message);
                    }
                }
            }
        }
    }
    Ok(records)
}

/// Two rules the collector's attribution does not apply (yet), which the analyses need:
/// - a record without a cluster (NR: no route was found) was on its way out of the writer, so the writer
///   is its source;
/// - a plaintext inbound line names no service (`inbound|9080||`, no SNI): the Service that selects the
///   writer on that target port does.
fn complete(record: &mut RequestRecord, writer: &Writer, mesh: &MeshConfig) {
    match record.direction {
        Direction::Unknown => {
            if record.source_workload.is_none() {
                record.source_namespace.clone_from(&writer.identity.namespace);
                record.source_workload.clone_from(&writer.identity.workload);
            }
        }
        Direction::Inbound => {
            let port = record.destination_port.or_else(|| {
                record.upstream_cluster.as_deref().and_then(|c| c.parse::<ClusterName>().ok()).map(|c| c.port)
            });
            record.destination_port = port;
            if record.destination_service.is_none()
                && let (Some(workload), Some(port)) = (&writer.workload, port)
            {
                record.destination_service = service_on_port(mesh, workload, port);
            }
        }
        Direction::Outbound => {}
    }
}

/// FQDN of the Service that selects `workload` and sends `port` (a target port) to it.
fn service_on_port(mesh: &MeshConfig, workload: &WorkloadRef, port: u16) -> Option<String> {
    mesh.services()
        .filter(|s| s.metadata.ns() == workload.namespace)
        .filter(|s| s.spec.selector.as_ref().is_some_and(|sel| !sel.is_empty() && labels_match(sel, &workload.labels)))
        .find(|s| {
            s.spec.ports.iter().any(|p| match &p.target_port {
                Some(IntOrString::Int(target)) => *target == i64::from(port),
                Some(IntOrString::String(_)) => false,
                None => p.port == port,
            })
        })
        .map(|s| format!("{}.{}.svc.cluster.local", s.metadata.name, s.metadata.ns()))
}

fn percent(part: u64, total: u64) -> String {
    if total == 0 { "-".to_owned() } else { format!("{:.1}%", part as f64 * 100.0 / total as f64) }
}

fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v}ms"))
}

/// Writes rows as left-aligned columns under `headers`, indented by two spaces.
fn columns(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("  {}", padded.join("  ").trim_end())
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn write_table(out: &mut impl Write, report: &TrafficReport, skipped: &Skipped) -> std::io::Result<()> {
    writeln!(out, "Window {} .. {}\n", report.window.start.to_rfc3339(), report.window.end.to_rfc3339())?;

    let overall = &report.mtls.overall;
    writeln!(
        out,
        "mTLS: {} requests, {} mutual, {} plaintext, {} unknown ({} client-side unknowns resolved by pairing)",
        overall.requests,
        percent(overall.mutual, overall.requests),
        percent(overall.plaintext, overall.requests),
        percent(overall.unknown, overall.requests),
        overall.resolved_by_pairing
    )?;
    let rows: Vec<Vec<String>> = report
        .mtls
        .edges
        .iter()
        .map(|e| {
            vec![
                format!("{} -> {}", e.source, e.destination),
                e.counts.requests.to_string(),
                percent(e.counts.mutual, e.counts.requests),
                e.counts.plaintext.to_string(),
                e.counts.unknown.to_string(),
                e.configured.peer_authentication.to_owned(),
                serde_json::to_value(e.classification)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        columns(out, &["EDGE", "REQUESTS", "MUTUAL", "PLAINTEXT", "UNKNOWN", "CONFIGURED", "STATUS"], &rows)?;
    }

    writeln!(out, "\nRoutes:")?;
    let rows: Vec<Vec<String>> = report
        .routes
        .routes
        .iter()
        .map(|r| {
            vec![
                r.route.clone(),
                r.requests.to_string(),
                percent(r.errors, r.requests),
                millis(r.latency.map(|l| l.p50_ms)),
                millis(r.latency.map(|l| l.p95_ms)),
                millis(r.latency.map(|l| l.p99_ms)),
                r.last_seen.map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                r.split.as_ref().map_or_else(String::new, |s| {
                    format!("p={:.1e}{}", s.p_value, if s.drift { " DRIFT" } else { "" })
                }),
            ]
        })
        .collect();
    columns(out, &["ROUTE", "REQUESTS", "ERRORS", "P50", "P95", "P99", "LAST SEEN", "SPLIT"], &rows)?;
    for nr in &report.routes.no_route {
        writeln!(out, "  no route (NR): {} requests from {} to {}", nr.requests, nr.source, nr.authority)?;
    }
    for unmatched in &report.routes.unmatched {
        writeln!(
            out,
            "  matched no configured route: {} requests {} {}{}",
            unmatched.requests,
            unmatched.method.as_deref().unwrap_or("-"),
            unmatched.authority,
            unmatched.path.as_deref().unwrap_or("")
        )?;
    }

    writeln!(out, "\nResilience:")?;
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = report
        .resilience
        .services
        .iter()
        .map(|s| {
            vec![
                s.service.clone(),
                s.requests.to_string(),
                s.failures.server_errors.to_string(),
                s.failures.timeouts.to_string(),
                (s.failures.connect_failures + s.failures.connection_terminations).to_string(),
                s.failures.overflows.to_string(),
                percent(s.retries.retried, s.retries.requests),
                millis(s.latency.map(|l| l.p99_ms)),
                format!("{}/{}", s.configured.routes_with_timeout, s.configured.routes),
                format!("{}/{}", s.configured.routes_with_retries, s.configured.routes),
                yes_no(s.configured.outlier_detection),
                yes_no(s.configured.connection_limits),
            ]
        })
        .collect();
    columns(
        out,
        &[
            "SERVICE", "REQUESTS", "5XX", "TIMEOUTS", "UF/UC", "UO", "RETRIED", "P99", "TIMEOUT", "RETRIES", "OUTLIER",
            "LIMITS",
        ],
        &rows,
    )?;
    for chain in &report.resilience.amplification {
        writeln!(out, "  retry amplification: {} (up to {} tries)", chain.chain.join(" -> "), chain.worst_case_tries)?;
    }

    if !report.recommendations.is_empty() {
        writeln!(out, "\nRecommendations (full YAML with -o json):")?;
        for r in &report.recommendations {
            let confidence = serde_json::to_value(r.confidence).ok().and_then(|v| v.as_str().map(str::to_owned));
            writeln!(out, "  {}: {} (confidence {})", r.target, r.value, confidence.unwrap_or_default())?;
            writeln!(out, "      {}", r.formula)?;
        }
    }

    writeln!(out)?;
    write_findings(out, &report.findings)?;
    if skipped.anything() {
        writeln!(
            out,
            "\nSkipped: {} configuration documents, {} log lines (see stderr or -o json).",
            skipped.config_errors.len(),
            skipped.log_lines_total
        )?;
    }
    Ok(())
}

fn write_findings(out: &mut impl Write, findings: &[Finding]) -> std::io::Result<()> {
    if findings.is_empty() {
        return writeln!(out, "No findings.");
    }
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|f| vec![f.level.to_string(), f.code.clone(), f.resource.clone(), f.message.clone()])
        .collect();
    columns(out, &["LEVEL", "CODE", "RESOURCE", "MESSAGE"], &rows)?;
    writeln!(out, "\n{} findings. Fixes: `-o json` or docs/findings.md.", findings.len())
}
