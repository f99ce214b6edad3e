//! `meshlens proxy ...`: run the bundled proxy as an ingress gateway or a sidecar. See docs/proxy.md.

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use meshlens_model::mesh::Duration;
use meshlens_proxy::{
    AccessLogFormat, AccessLogTarget, CommonOptions, IdentityOptions, IngressOptions, Limits, OtlpOptions,
    SidecarOptions,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Ingress gateway: listeners from the config's Gateway servers (HTTP, HTTPS SIMPLE/MUTUAL) and
    /// Kubernetes Ingresses (port 80, and 443 for `spec.tls`), routed by VirtualServices and Ingress rules.
    Ingress(IngressArgs),
    /// Sidecar: an inbound listener on the workload's own address and ports (mTLS per PeerAuthentication,
    /// AuthorizationPolicy) forwarding to --app, and an outbound HTTP proxy (HTTP_PROXY) for the app.
    Sidecar(SidecarArgs),
}

#[derive(Debug, clap::Args)]
pub struct IngressArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Bind a config port to a local address, e.g. `80=127.0.0.1:18080`; ports not listed bind 0.0.0.0:PORT.
    #[arg(long = "listen", value_name = "PORT=ADDR", value_parser = parse_listen)]
    listen: Vec<(u16, SocketAddr)>,
    /// Gateway `credentialName`s (and Ingress `secretName`s) resolve to DIR/<name>/{tls.crt,tls.key,ca.crt}.
    #[arg(long, value_name = "DIR")]
    credential_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SidecarArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The Pod or WorkloadEntry this sidecar serves, as NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    workload: String,
    /// The local application inbound requests are forwarded to.
    #[arg(long, value_name = "ADDR")]
    app: SocketAddr,
    /// Where the outbound HTTP proxy listens (point the app's HTTP_PROXY here).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15001")]
    outbound: SocketAddr,
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// Mesh config files or directories (Kubernetes and Istio YAML/JSON); reloaded when they change.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    config: Vec<PathBuf>,
    /// `stdout`, `off`, or a file to append to.
    #[arg(long, value_name = "stdout|FILE|off", default_value = "stdout")]
    access_log: String,
    /// Access-log encoding: Istio's TEXT format, or the meshlens RequestRecord as JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::IstioText)]
    access_log_format: LogFormat,
    /// Export spans and access-log records over OTLP/HTTP (protobuf) to this endpoint, e.g.
    /// `http://127.0.0.1:4318` (`meshlens serve`'s OTLP/HTTP listener); `/v1/traces` and `/v1/logs` are appended.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Fraction of new traces whose spans are exported (0 to 1); requests with a `traceparent` follow the
    /// caller's sampled flag. Access-log records are exported whatever the sampling.
    #[arg(long, value_name = "RATIO", default_value_t = 1.0, value_parser = parse_ratio, requires = "otlp_endpoint")]
    trace_sampling: f64,
    /// Body of the OTLP log records: the meshlens JSON record (lossless: identities, mTLS, attempts) or
    /// Istio's TEXT line.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, requires = "otlp_endpoint")]
    otlp_log_format: LogFormat,
    /// Admin listener serving /ready and /stats/prometheus.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Mesh CA directory (`meshlens ca init`): the proxy issues its own workload certificate from it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["cert", "key", "root"])]
    ca_dir: Option<PathBuf>,
    /// Workload certificate chain (PEM); re-read when it changes.
    #[arg(long, value_name = "FILE", requires_all = ["key", "root"])]
    cert: Option<PathBuf>,
    /// Workload private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["cert", "root"])]
    key: Option<PathBuf>,
    /// Mesh root certificate(s) that verify peers (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["cert", "key"])]
    root: Option<PathBuf>,
    /// SPIFFE trust domain of the mesh.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// How often config files and certificates are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    reload_interval: Duration,
    /// Open downstream connections per listener.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Largest request head (request line and headers), bytes; larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_header_bytes)]
    max_header_bytes: usize,
    /// Largest request body, bytes (bodies are buffered for retries and mirrors); larger gets 413.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_request_body)]
    max_request_body: usize,
    /// How long an idle keep-alive connection waits for the next request.
    #[arg(long, value_name = "DURATION", default_value = "300s")]
    idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    IstioText,
    Json,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("expected a ratio between 0 and 1 (e.g. 0.01 for 1%), got {s:?}")),
    }
}

fn log_format(format: LogFormat) -> AccessLogFormat {
    match format {
        LogFormat::IstioText => AccessLogFormat::IstioText,
        LogFormat::Json => AccessLogFormat::Json,
    }
}

fn parse_listen(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s.split_once('=').ok_or("expected PORT=ADDR, e.g. 80=127.0.0.1:18080")?;
    let port = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    let addr = addr.parse().map_err(|_| format!("invalid address {addr:?} (expected IP:PORT)"))?;
    Ok((port, addr))
}

impl CommonArgs {
    fn options(self) -> CommonOptions {
        let access_log = match self.access_log.as_str() {
            "stdout" | "-" => AccessLogTarget::Stdout,
            "off" => AccessLogTarget::Off,
            path => AccessLogTarget::File(path.into()),
        };
        let identity = match (self.ca_dir, self.cert, self.key, self.root) {
            (Some(dir), ..) => IdentityOptions::CaDir(dir),
            (None, Some(cert), Some(key), Some(root)) => IdentityOptions::Files { cert, key, root },
            _ => IdentityOptions::None,
        };
        CommonOptions {
            config: self.config,
            access_log,
            access_log_format: log_format(self.access_log_format),
            admin: self.admin,
            identity,
            trust_domain: self.trust_domain,
            reload_interval: self.reload_interval.as_std(),
            limits: Limits {
                max_connections: self.max_connections,
                max_header_bytes: self.max_header_bytes,
                max_request_body: self.max_request_body,
                idle_timeout: self.idle_timeout.as_std(),
                ..Limits::default()
            },
            otlp: self.otlp_endpoint.map(|endpoint| OtlpOptions {
                sampling: self.trace_sampling,
                log_format: log_format(self.otlp_log_format),
                ..OtlpOptions::new(endpoint)
            }),
        }
    }
}

impl ProxyCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // The binary's main is synchronous; the proxy gets its own runtime: one worker per core it may run
        // on, and on a single core (a proxy pinned like Envoy with --concurrency 1) the current-thread
        // scheduler, which skips the work-stealing machinery a lone worker has no use for.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut builder = if cores == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            tokio::runtime::Builder::new_multi_thread()
        };
        let runtime = builder.enable_all().build().context("starting the runtime")?;
        runtime.block_on(async move {
            let running = match self {
                ProxyCommand::Ingress(args) => {
                    let listen: BTreeMap<u16, SocketAddr> = args.listen.into_iter().collect();
                    let options =
                        IngressOptions { common: args.common.options(), listen, credential_dir: args.credential_dir };
                    meshlens_proxy::start_ingress(options).await?
                }
                ProxyCommand::Sidecar(args) => {
                    let Some((namespace, workload)) = args.workload.split_once('/') else {
                        bail!("--workload must be NAMESPACE/NAME, got {:?}", args.workload);
                    };
                    let options = SidecarOptions {
                        common: args.common.options(),
                        namespace: namespace.to_owned(),
                        workload: workload.to_owned(),
                        app: args.app,
                        outbound: args.outbound,
                    };
                    meshlens_proxy::start_sidecar(options).await?
                }
            };
            // Handlers first: whoever reads the lines below may stop the proxy at once.
            let stop = super::shutdown_signal()?;
            for (name, addr) in running.listeners() {
                eprintln!("meshlens proxy: {name} listening on {addr}");
            }
            if let Some(admin) = running.admin_addr() {
                eprintln!("meshlens proxy: admin listening on {admin}");
            }
            // Ctrl-C or SIGTERM: stop, sending the telemetry still queued.
            stop.await;
            running.shutdown().await;
            Ok(ExitCode::SUCCESS)
        })
    }
}
