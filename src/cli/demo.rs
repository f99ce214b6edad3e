//! `meshlens demo`: the whole system on one machine in one command. It starts a mesh CA, `meshlens serve`,
//! a Bookinfo-like application (in-process apps, each behind a `meshlens proxy sidecar` child), a `meshlens
//! proxy ingress`, a log shipper and a traffic generator, all configured by the Istio YAML in `demo/`
//! (embedded in the binary, and written to the demo's directory for the user to read). When `--duration`
//! is up, or on Ctrl-C, it stops the traffic, the proxies, ships their last records, analyzes the run and
//! prints a summary — mTLS coverage, findings (with the planted ones ticked off) and recommendations —
//! before stopping the collector. See docs/quickstart.md.

mod apps;
mod children;
mod http;
mod shipper;
mod summary;
mod traffic;

use anyhow::{Context, bail};
use apps::{Apps, Role};
use children::Child;
use chrono::Utc;
use meshlens_model::mesh::{Duration, LoadReport, MeshConfig};
use shipper::Shipper;
use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tokio::sync::watch;

/// The demo mesh, shipped in the repository under `demo/`.
pub const MESH_YAML: &str = include_str!("../../demo/mesh.yaml");
/// The file name it is written to in the demo directory (`DIR/mesh/`).
const MESH_FILE: &str = "mesh.yaml";
/// The port every demo Service uses (and so every sidecar's inbound listener).
const SERVICE_PORT: u16 = 9080;
/// The ingress gateway's HTTP port on the gateway's address (Gateway port 80 maps to it).
const INGRESS_PORT: u16 = 8000;
/// Istio's ports for a sidecar's outbound listener and admin endpoint, on the workload's address.
const OUTBOUND_PORT: u16 = 15001;
const ADMIN_PORT: u16 = 15000;
/// How often new access-log lines are shipped to the collector.
const SHIP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, clap::Args)]
#[command(after_long_help = "Everything runs on loopback addresses 127.0.10.x (Linux routes all of \
    127.0.0.0/8 to `lo`; on macOS add them first: `sudo ifconfig lo0 alias 127.0.10.N`). The mesh \
    configuration is in DIR/mesh/mesh.yaml, each proxy's access log and each process' stderr in DIR/logs/, the \
    store in DIR/store. Exit status: 0 when every planted problem was found and nothing else of level Error, \
    1 otherwise, 2 when the demo could not run. See docs/quickstart.md.")]
pub struct DemoArgs {
    /// The demo's directory: mesh config, CA, logs, store and summary.json. Reused across runs (the
    /// store keeps earlier runs' records; the summary covers this run only).
    #[arg(long, value_name = "DIR", default_value = "./meshlens-demo")]
    data_dir: PathBuf,

    /// Where `meshlens serve` serves the REST API and dashboard (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    api_addr: SocketAddr,

    /// Requests per second of the traffic generator.
    #[arg(long, value_name = "N", default_value_t = 25.0, value_parser = parse_rate)]
    rate: f64,

    /// How long to run before the summary (e.g. `60s`, `5m`); without it, until Ctrl-C.
    #[arg(long, value_name = "DURATION")]
    duration: Option<Duration>,

    /// Seed of the traffic mix and of ratings' failures, to repeat a run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// Share of ratings' requests that fail with 503.
    #[arg(long, value_name = "RATIO", default_value_t = 0.2, value_parser = parse_ratio)]
    ratings_fail_rate: f64,

    /// Also write the summary as JSON to this file (it is always written to DIR/summary.json).
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 10_000.0 => Ok(rate),
        _ => Err(format!("expected requests per second between 0 and 10000, got {s:?}")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("expected a ratio between 0 and 1, got {s:?}")),
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

/// A workload of the demo mesh, from its WorkloadEntry.
#[derive(Debug, Clone)]
struct Workload {
    namespace: String,
    name: String,
    address: IpAddr,
    labels: std::collections::BTreeMap<String, String>,
    sidecar: bool,
}

impl Workload {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The access log's file name: `NAMESPACE__NAME.log`, the convention `meshlens analyze --logs` reads.
    fn log_file(&self) -> String {
        format!("{}__{}.log", self.namespace, self.name)
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Who is who in the demo mesh.
#[derive(Debug)]
struct Plan {
    report: LoadReport,
    gateway: Workload,
    /// The workloads with a sidecar, each with its app's role.
    services: Vec<(Workload, Role)>,
    /// The client without a sidecar, and the details workload it calls.
    legacy: Workload,
    details: Workload,
}

impl Plan {
    fn load() -> anyhow::Result<Plan> {
        let mut report = LoadReport::default();
        report.parse_str(MESH_FILE, MESH_YAML);
        if let Some(error) = report.errors.first() {
            bail!("the embedded demo mesh does not load: {error}");
        }
        let mesh = MeshConfig::new(report.resources.clone());
        let mut workloads = Vec::new();
        for w in mesh.workloads() {
            let address = w.address.as_deref().with_context(|| format!("workload {} has no address", w.id()))?;
            let address = address.parse().with_context(|| format!("workload {}: address {address:?}", w.id()))?;
            let sidecar = w.has_sidecar();
            workloads.push(Workload { namespace: w.namespace, name: w.name, address, labels: w.labels, sidecar });
        }
        let find = |what: &str, test: &dyn Fn(&Workload) -> bool| {
            workloads.iter().find(|w| test(w)).cloned().with_context(|| format!("the demo mesh has no {what}"))
        };
        let gateway = find("ingress gateway", &|w| w.label("istio") == Some("ingressgateway"))?;
        let legacy = find("client without a sidecar", &|w| !w.sidecar && w.label("istio").is_none())?;
        let details = find("details workload", &|w| w.label("app") == Some("details"))?;
        let services: Vec<(Workload, Role)> = workloads
            .iter()
            .filter(|w| w.sidecar)
            .filter_map(|w| Some((w.clone(), Role::from_labels(w.label("app")?, w.label("version"))?)))
            .collect();
        Ok(Plan { report, gateway, services, legacy, details })
    }

    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        [self.gateway.address, self.legacy.address].into_iter().chain(self.services.iter().map(|(w, _)| w.address))
    }
}

/// The demo's directory.
struct Layout {
    mesh: PathBuf,
    ca: PathBuf,
    logs: PathBuf,
    store: PathBuf,
    summary: PathBuf,
}

impl Layout {
    fn prepare(dir: &Path) -> anyhow::Result<Layout> {
        let layout = Layout {
            mesh: dir.join("mesh"),
            ca: dir.join("ca"),
            logs: dir.join("logs"),
            store: dir.join("store"),
            summary: dir.join("summary.json"),
        };
        // Access logs of an earlier run would be shipped again; the store keeps what they said.
        if layout.logs.exists() {
            std::fs::remove_dir_all(&layout.logs).with_context(|| format!("clearing {}", layout.logs.display()))?;
        }
        for path in [&layout.mesh, &layout.logs] {
            std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        }
        let mesh_file = layout.mesh.join(MESH_FILE);
        std::fs::write(&mesh_file, MESH_YAML).with_context(|| format!("writing {}", mesh_file.display()))?;
        Ok(layout)
    }

    fn mesh_file(&self) -> PathBuf {
        self.mesh.join(MESH_FILE)
    }
}

/// Fails early, with the fix, where the loopback addresses cannot be bound (macOS configures 127.0.0.1
/// only), or a port the demo needs is taken (another demo running).
fn check_addresses(plan: &Plan) -> anyhow::Result<()> {
    for address in plan.addresses() {
        match std::net::TcpListener::bind((address, 0)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => bail!(
                "cannot bind {address}: the demo runs its workloads on 127.0.10.x loopback addresses. On Linux they \
                 work without setup; on macOS add them with `sudo ifconfig lo0 alias {address}`."
            ),
            Err(e) => return Err(e).with_context(|| format!("binding {address}")),
        }
    }
    let ingress = SocketAddr::new(plan.gateway.address, INGRESS_PORT);
    if let Err(e) = std::net::TcpListener::bind(ingress) {
        bail!("the ingress address {ingress} is not free ({e}): is another `meshlens demo` running?");
    }
    Ok(())
}

/// Everything running; stopped in order by [`Running::stop`], killed by drop on error paths.
struct Running {
    serve: Option<Child>,
    proxies: Vec<Child>,
    apps: Apps,
    api: SocketAddr,
    otlp_http: SocketAddr,
    ingress: SocketAddr,
    /// Whether the API answers without a token (so the demo can read it).
    api_open: bool,
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::load()?;
    check_addresses(&plan)?;
    let layout = Layout::prepare(&args.data_dir)?;
    let started = Utc::now();
    let clock = Instant::now();

    let mut shutdown = Shutdown::listen()?;
    let mut running = tokio::select! {
        running = start(&args, &plan, &layout) => running?,
        () = shutdown.requested() => {
            eprintln!("meshlens demo: interrupted during start-up");
            return Ok(ExitCode::from(2));
        }
    };
    eprintln!("meshlens demo: started in {:.1}s", clock.elapsed().as_secs_f64());
    eprintln!("meshlens demo: API        http://{}/api/v1 (health: http://{}/healthz)", running.api, running.api);
    eprintln!("meshlens demo: dashboard  http://{}/", running.api);
    eprintln!("meshlens demo: application http://{}/productpage (through the ingress gateway)", running.ingress);
    eprintln!("meshlens demo: mesh config {}", layout.mesh_file().display());
    eprintln!("meshlens demo: logs       {}", layout.logs.display());
    match args.duration {
        Some(d) => eprintln!("meshlens demo: sending {} requests/s for {d}; Ctrl-C stops early", args.rate),
        None => eprintln!("meshlens demo: sending {} requests/s; Ctrl-C stops and prints the summary", args.rate),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let targets = traffic::Targets {
        ingress: running.ingress,
        details: SocketAddr::new(plan.details.address, SERVICE_PORT),
        legacy_source: plan.legacy.address,
    };
    let generator = tokio::spawn(traffic::run(targets, args.rate, args.seed, stop_rx.clone()));
    let mut shipper = Shipper::new(running.otlp_http);
    shipper.follow(plan.gateway.id(), layout.logs.join(plan.gateway.log_file()));
    for (workload, _) in &plan.services {
        shipper.follow(workload.id(), layout.logs.join(workload.log_file()));
    }
    let shipping = tokio::spawn(ship_until(shipper, stop_rx));

    // Run until the duration is up, a signal arrives, or a child dies.
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d.as_std());
    let mut died = None;
    loop {
        let tick = tokio::time::sleep(std::time::Duration::from_secs(1));
        tokio::select! {
            () = tick => {}
            () = shutdown.requested() => {
                eprintln!("meshlens demo: stopping (Ctrl-C again to kill everything at once)");
                break;
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        if let Some(name) = running.dead_child() {
            died = Some(name);
            break;
        }
    }

    // Stop in order: traffic, then the proxies (they write their last records), then ship those.
    let _ = stop_tx.send(true);
    let counts = generator.await.context("the traffic generator failed")?;
    let proxies_clean = tokio::select! {
        clean = running.stop_proxies() => Some(clean),
        () = shutdown.requested() => None,
    };
    let Some(proxies_clean) = proxies_clean else {
        running.kill().await;
        bail!("killed on the second Ctrl-C");
    };
    running.apps.stop();
    let mut shipper = shipping.await.context("the log shipper failed")?;
    final_ship(&mut shipper).await?;
    let ended = Utc::now();

    let report = summary::analyze(&plan.report, &layout.store, started, ended).await;
    let api_view = if running.api_open { fetch_api(running.api, started, ended).await } else { None };
    let compliance = if running.api_open { store_report(running.api, started, &args.data_dir).await } else { None };
    let serve_clean = match running.serve.take() {
        Some(serve) => serve.stop().await,
        None => false,
    };
    let report = report?;
    let summary = summary::Summary::new(summary::Run {
        started,
        ended,
        api: format!("http://{}/api/v1", running.api),
        ingress: format!("http://{}/productpage", running.ingress),
        data_dir: args.data_dir.clone(),
        rate: args.rate,
        seed: args.seed,
        ratings_fail_rate: args.ratings_fail_rate,
        traffic: counts,
        shipped: shipper.totals,
        clean_shutdown: proxies_clean && serve_clean,
        report,
        api_view,
        compliance,
    });
    let json = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
    std::fs::write(&layout.summary, &json).with_context(|| format!("writing {}", layout.summary.display()))?;
    if let Some(path) = &args.summary_json {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    summary.print(&mut std::io::stdout().lock()).context("writing the summary")?;
    if let Some(name) = died {
        bail!("{name} exited unexpectedly; see its log in {}", layout.logs.display());
    }
    Ok(if summary.all_planted_found() && summary.unplanted_errors() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Starts the CA, the collector, the apps with their sidecars and the ingress, in that order.
async fn start(args: &DemoArgs, plan: &Plan, layout: &Layout) -> anyhow::Result<Running> {
    let mesh = layout.mesh_file();
    if !layout.ca.join("ca.crt").exists() {
        children::run(&[OsStr::new("ca"), OsStr::new("init"), OsStr::new("--ca-dir"), layout.ca.as_os_str()]).await?;
    }

    let api_addr = args.api_addr.to_string();
    // The demo is local: on loopback, its API needs no token, so that `curl` just works. (A non-loopback
    // address keeps authentication on; `meshlens token create` makes a token.)
    let api_open = args.api_addr.ip().is_loopback() && serve_has_flag("--insecure-no-auth").await;
    let mut serve_args: Vec<&OsStr> = vec![
        "serve".as_ref(),
        "--data-dir".as_ref(),
        layout.store.as_os_str(),
        "--api-addr".as_ref(),
        api_addr.as_ref(),
        // The OTLP receivers on free ports: the demo's proxies log to files, and a collector the user already
        // runs on 4317/4318 must not stop the demo.
        "--otlp-grpc-addr".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--otlp-http-addr".as_ref(),
        "127.0.0.1:0".as_ref(),
        "-f".as_ref(),
        mesh.as_os_str(),
    ];
    if api_open {
        serve_args.push("--insecure-no-auth".as_ref());
    }
    let (serve, line) =
        children::spawn("serve", &serve_args, &layout.logs, |line| line.starts_with("meshlens listening ")).await?;
    let listening = |key: &str| -> anyhow::Result<SocketAddr> {
        let field = line.split_whitespace().find_map(|f| f.strip_prefix(key));
        field.and_then(|a| a.parse().ok()).with_context(|| format!("no {key}ADDR in {line:?}"))
    };
    let mut running = Running {
        api: listening("api=")?,
        otlp_http: listening("otlp_http=")?,
        serve: Some(serve),
        proxies: Vec::new(),
        apps: Apps::new(),
        ingress: SocketAddr::new(plan.gateway.address, INGRESS_PORT),
        api_open,
    };

    let ca = layout.ca.as_os_str();
    for (index, (workload, role)) in plan.services.iter().enumerate() {
        let outbound = SocketAddr::new(workload.address, OUTBOUND_PORT);
        let seed = args.seed.wrapping_add(index as u64);
        let app = running.apps.start(*role, outbound, args.ratings_fail_rate, seed).await?;
        let (app, outbound, admin) =
            (app.to_string(), outbound.to_string(), SocketAddr::new(workload.address, ADMIN_PORT).to_string());
        let log = layout.logs.join(workload.log_file());
        let id = workload.id();
        let sidecar_args: Vec<&OsStr> = vec![
            "proxy".as_ref(),
            "sidecar".as_ref(),
            "-f".as_ref(),
            mesh.as_os_str(),
            "--workload".as_ref(),
            id.as_ref(),
            "--app".as_ref(),
            app.as_ref(),
            "--outbound".as_ref(),
            outbound.as_ref(),
            "--admin".as_ref(),
            admin.as_ref(),
            "--ca-dir".as_ref(),
            ca,
            "--access-log".as_ref(),
            log.as_os_str(),
            "--access-log-format".as_ref(),
            "json".as_ref(),
        ];
        let name = format!("{}__{}", workload.namespace, workload.name);
        let (sidecar, _) = children::spawn(&name, &sidecar_args, &layout.logs, admin_ready).await?;
        running.proxies.push(sidecar);
    }

    let listen = format!("80={}", running.ingress);
    let admin = SocketAddr::new(plan.gateway.address, ADMIN_PORT).to_string();
    let log = layout.logs.join(plan.gateway.log_file());
    let ingress_args: Vec<&OsStr> = vec![
        "proxy".as_ref(),
        "ingress".as_ref(),
        "-f".as_ref(),
        mesh.as_os_str(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--admin".as_ref(),
        admin.as_ref(),
        "--ca-dir".as_ref(),
        ca,
        "--access-log".as_ref(),
        log.as_os_str(),
        "--access-log-format".as_ref(),
        "json".as_ref(),
    ];
    let name = format!("{}__{}", plan.gateway.namespace, plan.gateway.name);
    let (ingress, _) = children::spawn(&name, &ingress_args, &layout.logs, admin_ready).await?;
    running.proxies.push(ingress);
    Ok(running)
}

/// Whether this build's `meshlens serve` has `flag` (the REST API's options arrived after the collector's).
async fn serve_has_flag(flag: &str) -> bool {
    let help = tokio::process::Command::new(std::env::current_exe().unwrap_or_default())
        .args(["serve", "--help"])
        .output()
        .await;
    help.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}

/// The REST API's view of the run: `GET /api/v1/findings` and `GET /api/v1/mtls/coverage` over the run's
/// window, or `None` where this build's API lacks them.
async fn fetch_api(
    api: SocketAddr,
    started: chrono::DateTime<Utc>,
    ended: chrono::DateTime<Utc>,
) -> Option<summary::ApiView> {
    let client = http::client(None);
    let window = format!(
        "start={}&end={}",
        started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (ended + chrono::TimeDelta::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let get = |path: String| {
        let client = client.clone();
        async move {
            let request = ::http::Request::get(format!("http://{api}{path}")).body(http::Body::default()).ok()?;
            match http::call(&client, request).await {
                Ok((status, body)) if status.is_success() => serde_json::from_slice::<serde_json::Value>(&body).ok(),
                Ok((status, body)) => {
                    tracing::warn!(%path, %status, body = %String::from_utf8_lossy(&body), "the API did not answer");
                    None
                }
                Err(error) => {
                    tracing::warn!(%path, "the API did not answer: {error:#}");
                    None
                }
            }
        }
    };
    let findings = get(format!("/api/v1/findings?{window}&limit=500")).await?;
    let mtls_coverage = get(format!("/api/v1/mtls/coverage?{window}")).await?;
    Some(summary::ApiView { findings, mtls_coverage })
}

/// The demo's compliance policy: what a platform team would hold a production mesh to. The demo mesh fails
/// it on purpose (the planted plaintext client, the planted findings).
const DEMO_POLICY: &str =
    r#"{"mtls_min_percent": 99.9, "max_findings": {"error": 0}, "forbid_plaintext_namespaces": ["bookinfo"]}"#;

/// Produces a compliance report of the run through `POST /api/v1/reports` (stored in the report history),
/// fetches it back as HTML and JSON into `dir`, and checks that the history lists it.
async fn store_report(
    api: SocketAddr,
    started: chrono::DateTime<Utc>,
    dir: &Path,
) -> Option<summary::ComplianceReport> {
    let client = http::client(None);
    let call = |request: ::http::Request<http::Body>| {
        let client = client.clone();
        async move {
            let path = request.uri().to_string();
            match http::call(&client, request).await {
                Ok((status, body)) if status.is_success() => Some(body),
                Ok((status, body)) => {
                    tracing::warn!(%path, %status, body = %String::from_utf8_lossy(&body), "the API did not answer");
                    None
                }
                Err(error) => {
                    tracing::warn!(%path, "the API did not answer: {error:#}");
                    None
                }
            }
        }
    };
    // The window ends now and reaches back over the whole run.
    let seconds = (Utc::now() - started).num_seconds() + 2;
    let body = format!(r#"{{"window": "{seconds}s", "policy": {DEMO_POLICY}}}"#);
    let create = ::http::Request::post(format!("http://{api}/api/v1/reports"))
        .header(::http::header::CONTENT_TYPE, "application/json")
        .body(http::Body::from(body))
        .ok()?;
    let created: serde_json::Value = serde_json::from_slice(&call(create).await?).ok()?;
    let id = created["id"].as_i64()?;
    let get =
        |query: String| ::http::Request::get(format!("http://{api}/api/v1/reports{query}")).body(http::Body::default());
    let html_path = dir.join("report.html");
    let json_path = dir.join("report.json");
    let html = call(get(format!("/{id}?format=html")).ok()?).await?;
    let json = call(get(format!("/{id}?format=json")).ok()?).await?;
    let listing: serde_json::Value = serde_json::from_slice(&call(get(String::new()).ok()?).await?).ok()?;
    let listed = listing["reports"].as_array().is_some_and(|items| items.iter().any(|r| r["id"] == id));
    for (path, bytes) in [(&html_path, &html), (&json_path, &json)] {
        if let Err(e) = std::fs::write(path, bytes) {
            tracing::warn!(path = %path.display(), "cannot write the report: {e}");
            return None;
        }
    }
    Some(summary::ComplianceReport {
        id,
        passed: created["passed"].as_bool(),
        html: html_path,
        json: json_path,
        listed,
    })
}

/// A proxy prints its admin listener last, after every other listener is bound.
fn admin_ready(line: &str) -> bool {
    line.starts_with("meshlens proxy: admin listening on")
}

impl Running {
    /// The name of a child that exited on its own.
    fn dead_child(&mut self) -> Option<String> {
        self.serve.iter_mut().chain(self.proxies.iter_mut()).find_map(|c| c.exited().map(|_| c.name.clone()))
    }

    /// Stops the ingress first (no new requests into the mesh), then the sidecars.
    async fn stop_proxies(&mut self) -> bool {
        let mut clean = true;
        while let Some(proxy) = self.proxies.pop() {
            clean &= proxy.stop().await;
        }
        clean
    }

    async fn kill(&mut self) {
        for child in self.proxies.drain(..).chain(self.serve.take()) {
            child.kill().await;
        }
        self.apps.stop();
    }
}

/// Ships access logs every second until `stop`, then hands the shipper back for the final pass.
async fn ship_until(mut shipper: Shipper, mut stop: watch::Receiver<bool>) -> Shipper {
    loop {
        if let Err(error) = shipper.pass().await {
            // Sent again on the next pass: the collector may be busy for a moment.
            tracing::warn!("shipping access logs: {error:#}");
        }
        tokio::select! {
            () = tokio::time::sleep(SHIP_INTERVAL) => {}
            _ = stop.wait_for(|stopped| *stopped) => return shipper,
        }
    }
}

/// The last records, written by the proxies as they stopped; a busy collector gets a few more chances.
async fn final_ship(shipper: &mut Shipper) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match shipper.pass().await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 5 => {
                tracing::warn!("shipping the last access logs: {error:#}");
                tokio::time::sleep(SHIP_INTERVAL).await;
            }
            Err(error) => return Err(error.context("shipping the last access logs")),
        }
    }
}

/// Ctrl-C and SIGTERM.
struct Shutdown {
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn listen() -> anyhow::Result<Shutdown> {
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        Ok(Shutdown { terminate })
    }

    /// Resolves at the next Ctrl-C or SIGTERM.
    async fn requested(&mut self) {
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                if let Err(error) = result {
                    tracing::error!("cannot listen for Ctrl-C: {error}");
                    std::future::pending::<()>().await;
                }
            }
            _ = self.terminate.recv() => {}
        }
    }
}
