//! `meshlens serve`: the collector. Opens the store, starts the OTLP/gRPC + Envoy ALS, OTLP/HTTP and API
//! listeners, and runs until Ctrl-C or SIGTERM, then stops accepting, finishes in-flight requests and
//! flushes the store.

use super::live_config::{self, ConfigSink, KubeArgs};
use anyhow::Context;
use meshlens_api::{ApiLimits, AppState, MeshSnapshot};
use meshlens_collector::api::ApiState;
use meshlens_collector::attribution::{Attributor, SharedAttributor};
use meshlens_collector::ingest::Ingest;
use meshlens_collector::internal_events::Telemetry;
use meshlens_collector::server::{self, Listeners};
use meshlens_collector::sources::SourceContext;
use meshlens_model::mesh::{LoadReport, MeshConfig, MeshSettings};
use meshlens_store::{Store, StoreConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Where the store lives; shared by the commands that write to it.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory of the store (write-ahead log, Parquet files, and the SQLite catalog unless
    /// --database-url says otherwise).
    #[arg(long, value_name = "DIR", env = "MESHLENS_DATA_DIR", default_value = "./meshlens-data")]
    pub data_dir: PathBuf,

    /// Catalog database: `postgres://USER@HOST:PORT/DB`, or `sqlite:PATH`. Default: SQLite in the data
    /// directory.
    #[arg(long, value_name = "URL", env = "MESHLENS_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn config(&self) -> StoreConfig {
        StoreConfig { database_url: self.database_url.clone(), ..StoreConfig::new(&self.data_dir) }
    }
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(Option<SocketAddr>);

fn listen_addr(s: &str) -> Result<ListenAddr, String> {
    if s == "off" {
        return Ok(ListenAddr(None));
    }
    s.parse().map(|a| ListenAddr(Some(a))).map_err(|_| format!("expected IP:PORT or `off`, found {s:?}"))
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("expected a positive number of requests per second, found {s:?}")),
    }
}

/// How long telemetry is kept, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionAge(Option<Duration>);

fn retention_age(s: &str) -> Result<RetentionAge, String> {
    if s == "off" {
        return Ok(RetentionAge(None));
    }
    let age = match s.strip_suffix('d').map(str::parse::<u64>) {
        Some(Ok(days)) => Duration::from_secs(days.saturating_mul(86_400)),
        _ => s
            .parse::<meshlens_model::mesh::Duration>()
            .map_err(|_| format!("expected an age such as `14d`, `36h` or `90m`, or `off`; found {s:?}"))?
            .as_std(),
    };
    if age < Duration::from_secs(3600) {
        return Err(format!("{s:?} is less than 1h; the store drops whole hour partitions"));
    }
    Ok(RetentionAge(Some(age)))
}

/// A size in bytes: a number with a binary unit, `64MiB`, `512M`, `1GiB`, `2G` (the unit is
/// case-insensitive; `M` means MiB), at least 1 MiB.
fn memory_size(s: &str) -> Result<usize, String> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let shift = match unit {
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("expected a size such as `64MiB` or `1GiB`, found {s:?}")),
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("expected a size such as `64MiB` or `1GiB`, found {s:?}"))?;
    if bytes < 1 << 20 {
        return Err(format!("{s:?} is less than 1MiB"));
    }
    Ok(bytes)
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Each listener takes IP:PORT, or `off` to disable it; port 0 picks a free port. The \
                        bound addresses are printed on stderr at start-up as \
                        `meshlens listening otlp_grpc=ADDR otlp_http=ADDR api=ADDR`. See docs/collector.md.")]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// OTLP/gRPC (TraceService, LogsService) and Envoy ALS (AccessLogService) listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4317", value_parser = listen_addr)]
    otlp_grpc_addr: ListenAddr,

    /// OTLP/HTTP (/v1/traces, /v1/logs) and access-log lines (/v1/accesslogs) listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318", value_parser = listen_addr)]
    otlp_http_addr: ListenAddr,

    /// API listener: the REST API (/api/v1), /healthz, /readyz, /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = listen_addr)]
    api_addr: ListenAddr,

    /// Mesh configuration (Kubernetes/Istio YAML or JSON files or directories): what the API's analyses
    /// read, and whose Pods and WorkloadEntries name the peers of records by IP address.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Istio MeshConfig file (sets e.g. the root namespace).
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,

    #[command(flatten)]
    kube: KubeArgs,

    /// Drop stored telemetry older than AGE, e.g. `14d` or `36h` (at least `1h`: whole hour partitions go,
    /// checked at start and every 5 minutes). `off` keeps everything. Config history, reports, schedules
    /// and tokens are never dropped.
    #[arg(long, value_name = "AGE", default_value = "off", value_parser = retention_age)]
    retention: RetentionAge,

    /// Most telemetry held in memory before it is in Parquet, e.g. `64MiB` or `1GiB`. A flush starts when
    /// half of it is buffered; when all of it is, new data waits up to 2 s for a flush to make room, then
    /// receivers answer 503 / UNAVAILABLE with a retry delay instead of growing. The process as a whole
    /// needs about twice this.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = memory_size)]
    memory_budget: usize,

    /// Sustained REST API requests per second per token (per client address without auth); after a pause a
    /// client may send up to four times as many at once. Beyond: 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 50.0, value_parser = positive_rate)]
    api_rate_limit: f64,

    /// Serve the REST API without authentication (every request is an unscoped admin). Refused unless
    /// --api-addr is a loopback address.
    #[arg(long)]
    insecure_no_auth: bool,
}

impl ServeArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> anyhow::Result<ExitCode> {
        if self.insecure_no_auth
            && let Some(addr) = self.api_addr.0
            && !addr.ip().is_loopback()
        {
            anyhow::bail!(
                "--insecure-no-auth serves the API to anyone who can connect; it is allowed only on a loopback \
                 --api-addr (127.0.0.1 or ::1), not {addr}"
            );
        }
        let mesh = load_mesh_config(&self.paths)?;
        let settings = match &self.mesh_config {
            None => MeshSettings::default(),
            Some(path) => MeshSettings::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        let attributor = SharedAttributor::new(attributor_for(&mesh));
        let store = Store::open(StoreConfig {
            retention: self.retention.0,
            memory_budget_bytes: self.memory_budget,
            ..self.store.config()
        })
        .await
        .with_context(|| format!("opening the store in {}", self.store.data_dir.display()))?;
        let store = Arc::new(store);
        let telemetry = Arc::new(Telemetry::default());
        let limits = ApiLimits {
            requests_per_second: self.api_rate_limit,
            burst: (self.api_rate_limit * 4.0).ceil().min(f64::from(u32::MAX)) as u32,
            ..ApiLimits::default()
        };
        let app = AppState::new(Arc::clone(&store), MeshSnapshot::default())
            .context("starting the query executor")?
            .with_limits(limits);
        // The configuration in force is recorded in the config history and published before any listener
        // opens; with --kube, start-up fails here when the cluster cannot be watched.
        let sink = ConfigSink::new(app.clone(), attributor.clone(), settings);
        if self.kube.kube {
            live_config::start_kube(&self.kube, sink).await?;
        } else {
            sink.publish_files(mesh).await;
        }
        let ctx = SourceContext { ingest: Ingest::new(Arc::clone(&store), Arc::clone(&telemetry)), attributor };
        let api = ApiState { store: Arc::clone(&store), telemetry, ready: Arc::new(AtomicBool::new(false)) };
        let listeners =
            Listeners { otlp_grpc: self.otlp_grpc_addr.0, otlp_http: self.otlp_http_addr.0, api: self.api_addr.0 };
        let app = if self.insecure_no_auth {
            tracing::warn!("the REST API runs without authentication (--insecure-no-auth)");
            app.without_auth()
        } else {
            app
        };
        // Scheduled reports (docs/reports.md): started with the API, stopped before the store closes.
        let ticker = meshlens_api::schedules::Ticker::spawn(app.clone(), Default::default());
        let rest_api = meshlens_api::router(app);
        let server = server::start(listeners, ctx, api, rest_api).await?;
        let bound = server.local_addrs();
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
        // Handlers first: whoever reads the line below may stop the server at once.
        let stop = super::shutdown_signal()?;
        // Printed whatever the log level: scripts and tests read the chosen ports from it.
        eprintln!(
            "meshlens listening otlp_grpc={} otlp_http={} api={}",
            show(bound.otlp_grpc),
            show(bound.otlp_http),
            show(bound.api)
        );
        let served = server.run_until(stop).await;
        ticker.stop().await;
        store.close().await.context("closing the store")?;
        eprintln!("meshlens stopped");
        served.map_err(anyhow::Error::msg)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Reads the mesh configuration; problems in it are reported but do not stop the collector (records are
/// still stored, just less attributed, and the API shows the load errors).
pub fn load_mesh_config(paths: &[PathBuf]) -> anyhow::Result<LoadReport> {
    if paths.is_empty() {
        return Ok(LoadReport::default());
    }
    let report = super::config::load(paths)?;
    for error in &report.errors {
        tracing::warn!("mesh config: {error}");
    }
    Ok(report)
}

/// Attribution by the Pods and WorkloadEntries of `mesh`.
pub fn attributor_for(mesh: &LoadReport) -> Attributor {
    if mesh.resources.is_empty() {
        return Attributor::default();
    }
    let attributor = Attributor::new(Some(&MeshConfig::new(mesh.resources.clone())));
    tracing::info!(addresses = attributor.known_addresses(), "mesh config loaded for attribution");
    attributor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_ages_parse_days_go_durations_and_off() {
        assert_eq!(retention_age("off"), Ok(RetentionAge(None)));
        assert_eq!(retention_age("14d"), Ok(RetentionAge(Some(Duration::from_secs(14 * 86_400)))));
        assert_eq!(retention_age("36h"), Ok(RetentionAge(Some(Duration::from_secs(36 * 3600)))));
        assert_eq!(retention_age("1h30m"), Ok(RetentionAge(Some(Duration::from_secs(5400)))));
        assert!(retention_age("30m").unwrap_err().contains("less than 1h"));
        assert!(retention_age("two weeks").unwrap_err().contains("`14d`"));
        assert!(retention_age("").is_err());
        assert!(retention_age("-1d").is_err());
    }

    #[test]
    fn memory_sizes_take_binary_units_and_refuse_nonsense() {
        assert_eq!(memory_size("64MiB"), Ok(64 << 20));
        assert_eq!(memory_size("512m"), Ok(512 << 20));
        assert_eq!(memory_size("1GiB"), Ok(1 << 30));
        assert_eq!(memory_size("2048K"), Ok(2 << 20));
        assert!(memory_size("512KiB").unwrap_err().contains("less than 1MiB"));
        for bad in ["", "64", "MiB", "64 MB", "-1G", "1.5GiB", "99999999999999999999G"] {
            assert!(memory_size(bad).unwrap_err().contains("`64MiB`"), "{bad:?}");
        }
    }
}
