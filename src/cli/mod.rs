//! Command-line surface: one module per subcommand, each with a clap `Args` struct and a `run` function
//! returning the process exit code.

mod analyze;
mod analyze_config;
mod ca;
mod config;
mod demo;
mod import;
mod live_config;
mod parse_log;
mod proxy;
mod query;
mod report;
mod serve;
mod token;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Service-mesh telemetry and policy analyzer.
///
/// meshlens checks Istio/Kubernetes mesh configuration, ingests Envoy/Istio telemetry, and reports mTLS
/// coverage, route usage and resilience gaps.
#[derive(Debug, Parser)]
#[command(name = "meshlens", version, propagate_version = true)]
pub struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `meshlens=debug`); defaults to $RUST_LOG or `warn`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system on this machine: a demo mesh with planted problems, traffic, the collector and
    /// API, and a summary of what meshlens found. Start here (docs/quickstart.md).
    Demo(demo::DemoArgs),
    /// Load and validate mesh configuration (Kubernetes and Istio YAML/JSON).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Parse Istio/Envoy access-log lines into normalized request records, one JSON object per line.
    ParseLog(parse_log::ParseLogArgs),
    /// Analyze mesh configuration: istioctl's checks (IST codes) and meshlens' resilience and security
    /// checks (ML codes).
    AnalyzeConfig(analyze_config::AnalyzeConfigArgs),
    /// Analyze observed traffic against the mesh configuration: mTLS coverage, route usage, resilience gaps
    /// and recommendations (ML2xxx findings), from the store or from access-log files (`--logs`).
    Analyze(analyze::AnalyzeArgs),
    /// Run the bundled Istio-compatible proxy (ingress gateway or mTLS sidecar).
    #[command(subcommand)]
    Proxy(Box<proxy::ProxyCommand>),
    /// Mesh certificate authority: root CA and SPIFFE workload certificates for the proxy.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Query stored telemetry (tables `requests` and `spans`) with read-only SQL.
    Query(query::QueryArgs),
    /// Run the collector: OTLP/gRPC, Envoy ALS, OTLP/HTTP and access-log receivers writing to the store.
    Serve(serve::ServeArgs),
    /// Manage the REST API's bearer tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Import access-log files (e.g. `kubectl logs POD -c istio-proxy`) into the store.
    Import(import::ImportArgs),
    /// Compliance report of the stored traffic over a window (HTML, JSON, Markdown or CSV), checked against
    /// a policy file; exit status 1 when it fails the policy.
    Report(report::ReportArgs),
}

impl Command {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Demo(args) => demo::run(args),
            Command::Config(cmd) => cmd.run(),
            Command::ParseLog(args) => args.run(),
            Command::AnalyzeConfig(args) => analyze_config::run(args),
            Command::Analyze(args) => analyze::run(args),
            Command::Proxy(cmd) => cmd.run(),
            Command::Ca(cmd) => cmd.run(),
            Command::Query(args) => args.run(),
            Command::Serve(args) => args.run(),
            Command::Token(cmd) => cmd.run(),
            Command::Import(args) => args.run(),
            Command::Report(args) => report::run(args),
        }
    }
}

/// Diagnostics go to stderr so that stdout stays machine-readable.
pub fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Installs the Ctrl-C and SIGTERM handlers (SIGTERM is what `kubectl delete pod` and systemd send) and
/// returns what resolves on either. Installed before a command says it is listening, so that a signal
/// sent right after that line stops it cleanly instead of killing it. Shared by `serve` and `proxy`.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
