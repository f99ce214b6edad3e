//! `meshlens report`: a compliance report of the store's traffic over a window, against the mesh
//! configuration, rendered as HTML, JSON, Markdown or CSV, optionally checked against a policy file and
//! stored in the report history (the same history `meshlens serve`'s API and schedules use).

use anyhow::Context;
use clap::ValueEnum;
use meshlens_api::analysis::window_until_now;
use meshlens_api::reports::{self, Format, Policy, history};
use meshlens_api::{AppState, MeshSnapshot};
use meshlens_model::mesh::{Duration, MeshSettings};
use meshlens_store::{Store, StoreConfig};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "The trend compares with the latest stored report (none when the history is \
    empty). Without --store nothing is written: the store is read-only and works next to a running \
    `meshlens serve`.\n\n\
    Exit status: 0 when the report passes the policy (or no policy is given); 1 when it fails the policy; 2 \
    when no report could be made (e.g. no store in --data-dir, or a policy file with errors). The report \
    format, the policy file and the CSV columns: docs/reports.md.")]
pub struct ReportArgs {
    /// Files or directories (searched recursively for .yaml, .yml and .json) with the mesh configuration;
    /// `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,

    /// Store data directory.
    #[arg(long, value_name = "DIR", env = "MESHLENS_DATA_DIR", default_value = "./meshlens-data")]
    data_dir: PathBuf,

    /// Store catalog database, when not the SQLite file in the data directory (`postgres://...`,
    /// `sqlite:PATH`). Stored reports go there too.
    #[arg(long, value_name = "URL", env = "MESHLENS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Istio MeshConfig file (sets e.g. the root namespace and the trust domain of principals).
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,

    /// Length of the window analyzed, ending now (`30m`, `24h`, `168h`).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    window: Duration,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Html)]
    output: OutputFormat,

    /// Policy file (YAML): thresholds the report must meet (docs/reports.md).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Write the report to this file instead of stdout.
    #[arg(long, value_name = "PATH")]
    output_file: Option<PathBuf>,

    /// Also store the report in the history (the catalog database).
    #[arg(long)]
    store: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// A self-contained page with inline CSS and SVG charts.
    Html,
    /// The report document (the format the history stores).
    Json,
    /// Markdown headings and tables.
    Md,
    /// One row per edge and per finding.
    Csv,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::Html => Format::Html,
            OutputFormat::Json => Format::Json,
            OutputFormat::Md => Format::Md,
            OutputFormat::Csv => Format::Csv,
        }
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.as_deref().map(Policy::load).transpose()?;
    let load = super::config::load(&args.paths)?;
    for error in &load.errors {
        eprintln!("error: {error}");
    }
    let settings = match &args.mesh_config {
        None => MeshSettings::default(),
        Some(path) => MeshSettings::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let length = chrono::TimeDelta::from_std(args.window.as_std()).context("--window is too long")?;
    let config = StoreConfig { database_url: args.database_url.clone(), ..StoreConfig::new(&args.data_dir) };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let (report, id) = runtime.block_on(async {
        let store = Store::open_read_only(config.clone())
            .await
            .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
        let state =
            AppState::new(Arc::new(store), MeshSnapshot::new(load, settings)).context("starting the query executor")?;
        // Storing needs a writable connection; reading the previous report does not, and a history that
        // was never created just means there is no trend.
        let writable = if args.store { Some(history::open_catalog(&config).await?) } else { None };
        let catalog = writable.as_ref().unwrap_or(state.store.catalog());
        let previous = match history::latest(catalog, None).await {
            Ok(_) => Some(catalog),
            Err(error) => {
                tracing::warn!(%error, "no report history to compare with");
                None
            }
        };
        let report = reports::generate(&state, previous, window_until_now(Some(length)), policy.as_ref(), None).await?;
        let id = match &writable {
            Some(catalog) => {
                let id = history::insert(catalog, &report, None).await?;
                catalog.close().await;
                Some(id)
            }
            None => None,
        };
        anyhow::Ok((report, id))
    })?;
    if let Some(id) = id {
        eprintln!("stored report {id}");
    }

    let rendered = reports::render(&report, id, args.output.into());
    match &args.output_file {
        Some(path) => std::fs::write(path, rendered).with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(rendered.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => {}
                // The reader went away (`| head`): not a failure of the report.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e).context("writing the report"),
            }
        }
    }
    let failed = report.policy.as_ref().is_some_and(|v| !v.passed);
    if let Some(verdict) = &report.policy {
        for check in verdict.checks.iter().filter(|c| !c.passed) {
            let subject = check.subject.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
            eprintln!("policy: {}{subject} failed: expected {}, found {}", check.rule, check.expected, check.actual);
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
