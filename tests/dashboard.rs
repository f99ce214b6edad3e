//! The web dashboard end to end, in a real browser: a running `meshlens serve` with traffic and the
//! bookinfo configuration, headless Chromium driven by chromedriver over the W3C WebDriver protocol
//! (plain HTTP and JSON), and the page at `/`. The numbers it renders must be those the API answers for
//! the same data; a report made with its button must open inside the page; without a token it must ask
//! for one instead of showing data.
//!
//! chromedriver and Chromium are Debian's `chromium-driver` and `chromium` (`.ci/run` installs them); other
//! paths can be given with `MESHLENS_TEST_CHROMEDRIVER` and `MESHLENS_TEST_CHROMIUM`. Without them the
//! tests fail rather than skip. `MESHLENS_DASHBOARD_SCREENSHOT=FILE` saves a screenshot of the page.

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshlens");
/// How long the page may take to show something; generous, as CI machines are small and shared.
const PATIENCE: Duration = Duration::from_secs(90);
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Requests the test sends: mutual ones from productpage to reviews, plaintext ones from shop/web to ratings.
const MUTUAL: usize = 40;
const PLAINTEXT: usize = 20;

fn samples(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-samples/bookinfo").join(path)
}

/// `meshlens token create`'s token: the last line of its stdout.
fn create_token(data_dir: &Path, role: &str) -> String {
    let output = Command::new(BIN)
        .args(["token", "create", "--role", role, "--name", "dashboard-e2e", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run meshlens token create");
    assert!(output.status.success(), "token create: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8").lines().last().expect("a line").trim().to_owned()
}

/// A running `meshlens serve` over the bookinfo configuration with the reviews 80/20 split, killed on drop.
struct Server {
    child: Child,
    api: SocketAddr,
    http: SocketAddr,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
            .args(["--api-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("-f")
            .arg(samples("platform/kube/bookinfo.yaml"))
            .arg("-f")
            .arg(samples("networking/virtual-service-reviews-80-20.yaml"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshlens serve");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stderr.read_line(&mut line).expect("read stderr") > 0, "meshlens serve exited before listening");
            if line.starts_with("meshlens listening ") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace().find_map(|f| f.strip_prefix(key)).expect(key).parse().expect("address")
        };
        Server { api: addr("api="), http: addr("otlp_http="), child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records as meshlens JSON lines, in the last minutes: [`MUTUAL`] mutual requests from
/// default/productpage-v1 to reviews (every fifth a 503, to subset v2; the others to v1), logged by both
/// sidecars, and [`PLAINTEXT`] plaintext ones from shop/web to ratings, logged by the server only.
fn access_log() -> String {
    let now = chrono::Utc::now();
    let mut lines = String::new();
    let calls = [
        ("default", "productpage-v1", "reviews", "mutual", MUTUAL),
        ("shop", "web", "ratings", "plaintext", PLAINTEXT),
    ];
    for (source_namespace, source, service, mtls, n) in calls {
        for i in 0..n {
            let version = if i % 5 == 0 { "v2" } else { "v1" };
            let server = json!({
                "timestamp": (now - chrono::TimeDelta::seconds(1 + i as i64)).to_rfc3339(),
                "duration_ms": 5 + i,
                "method": "GET",
                "path": "/",
                "authority": format!("{service}:9080"),
                "status": if i % 5 == 0 { 503 } else { 200 },
                "response_flags": [],
                "request_id": format!("{source}-{i}"),
                "reporter": "destination",
                "direction": "inbound",
                "upstream_cluster": "inbound|9080||",
                "destination_service": format!("{service}.default.svc.cluster.local"),
                "destination_port": 9080,
                "destination_namespace": "default",
                "destination_workload": format!("{service}-{version}"),
                "source_namespace": source_namespace,
                "source_workload": source,
                "mtls": mtls,
                "source_format": "meshlens_json",
            });
            lines.push_str(&server.to_string());
            lines.push('\n');
            if service == "reviews" {
                // The client's record of the same request: it knows the subset, not the mTLS.
                let mut client = server.clone();
                client["reporter"] = json!("source");
                client["direction"] = json!("outbound");
                client["upstream_cluster"] =
                    json!(format!("outbound|9080|{version}|reviews.default.svc.cluster.local"));
                client["destination_subset"] = json!(version);
                client["mtls"] = json!("unknown");
                lines.push_str(&client.to_string());
                lines.push('\n');
            }
        }
    }
    lines
}

/// One HTTP request with an optional body (its content type and text); the status and the body, or the
/// client's error (a service that does not listen yet).
async fn try_http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, String)>,
) -> Result<(u16, Vec<u8>), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some((content_type, text)) => {
            builder = builder.header("content-type", content_type);
            Full::from(text)
        }
        None => Full::default(),
    };
    let response = client.request(builder.body(body).expect("request")).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes.to_vec()))
}

async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<(&str, String)>) -> (u16, Vec<u8>) {
    try_http(method, url, headers, body).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `GET` of an API path with the token, as JSON; panics unless 200.
async fn api(server: &Server, token: &str, path: &str) -> Value {
    let auth = format!("Bearer {token}");
    let (status, body) = http("GET", &server.url(path), &[("authorization", &auth)], None).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

/// Stores the traffic and waits until the API shows both edges.
async fn load(server: &Server, token: &str) {
    let url = format!("http://{}/v1/accesslogs", server.http);
    let (status, body) = http("POST", &url, &[], Some(("application/x-ndjson", access_log()))).await;
    let stored: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!((status, stored["stored"].as_u64()), (200, Some((2 * MUTUAL + PLAINTEXT) as u64)), "{stored}");
    let graph = api(server, token, "/api/v1/graph").await;
    assert_eq!(graph["total"], 2, "{graph}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

fn env_path(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name).filter(|p| !p.is_empty()).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Headless Chromium behind chromedriver, one WebDriver session. Dropping it ends the session's processes:
/// chromedriver runs in a process group of its own with the browser it starts, and the group is killed.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = env_path("MESHLENS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = env_path("MESHLENS_TEST_CHROMIUM", "/usr/bin/chromium");
        for (what, path, package) in
            [("chromedriver", &chromedriver, "chromium-driver"), ("Chromium", &chromium, "chromium")]
        {
            assert!(
                path.exists(),
                "{what} is not installed at {} (apt-get install {package}; .ci/run installs it)",
                path.display()
            );
        }
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser { driver, base: format!("http://127.0.0.1:{port}"), session: String::new(), profile };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = try_http("GET", &format!("{}/status", browser.base), &[], None).await;
            if let Ok((200, body)) = ready
                && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
            },
        }}});
        let session = browser.send("POST", "/session", Some(capabilities)).await;
        browser.session = session["sessionId"].as_str().expect("session id").to_owned();
        browser
    }

    /// A WebDriver command; its `value`. Panics with the driver's message on an error.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let (status, bytes) = http(method, &url, &[], body.map(|b| ("application/json", b.to_string()))).await;
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&bytes)));
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    async fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn goto(&self, url: &str) {
        self.session("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self.session("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.session("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found.as_array().expect("elements").iter().map(|e| e[ELEMENT].as_str().expect("element").to_owned()).collect()
    }

    async fn text(&self, element: &str) -> String {
        self.session("GET", &format!("/element/{element}/text"), None).await.as_str().unwrap_or_default().to_owned()
    }

    async fn attribute(&self, element: &str, name: &str) -> Option<String> {
        self.session("GET", &format!("/element/{element}/attribute/{name}"), None).await.as_str().map(str::to_owned)
    }

    async fn click(&self, element: &str) {
        self.session("POST", &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    async fn type_text(&self, element: &str, text: &str) {
        self.session("POST", &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    async fn execute(&self, script: &str) -> Value {
        self.session("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Runs `script` until it returns something other than `null`, for at most [`PATIENCE`].
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.execute(script).await;
            if !value.is_null() {
                return value;
            }
            if Instant::now() >= deadline {
                let state =
                    self.execute("return [document.body.dataset.state, document.body.innerText.slice(0, 2000)]").await;
                panic!("waited {PATIENCE:?} for {what}; page state and text: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn switch_to_frame(&self, element: &str) {
        self.session("POST", "/frame", Some(json!({"id": {ELEMENT: element}}))).await;
    }

    async fn switch_to_parent(&self) {
        self.session("POST", "/frame/parent", Some(json!({}))).await;
    }

    /// A PNG of the viewport.
    async fn screenshot(&self) -> Vec<u8> {
        base64_decode(self.session("GET", "/screenshot", None).await.as_str().expect("base64"))
    }

    /// Ends the session (the browser exits); the driver goes with the drop.
    async fn quit(self) {
        self.session("DELETE", "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group, which the browser it started belongs to.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other:?}"),
        }
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &c)| n | (value(c) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A share as the dashboard writes it: percent with one decimal.
fn share_text(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// A percentage as the report's HTML writes it: at most three decimals, no trailing zeros.
fn report_percent(value: f64) -> String {
    let text = format!("{value:.3}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_api_numbers_and_opens_a_new_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // Making a report stores it, which needs an admin token.
    let token = create_token(&data, "admin");
    let server = Server::start(&data);
    load(&server, &token).await;

    // What the API says about the same data and window (the page's default: the last hour).
    let coverage = api(&server, &token, "/api/v1/mtls/coverage?window=1h").await;
    let findings = api(&server, &token, "/api/v1/findings?window=1h").await;
    let graph = api(&server, &token, "/api/v1/graph?window=1h").await;
    let routes = api(&server, &token, "/api/v1/routes?window=1h").await;
    let share = coverage["overall"]["mutual_share"].as_f64().expect("mutual_share");
    assert_eq!(coverage["overall"]["requests"], (MUTUAL + PLAINTEXT) as u64, "{coverage}");
    assert!((share - MUTUAL as f64 / (MUTUAL + PLAINTEXT) as f64).abs() < 1e-9, "{coverage}");
    let used_route = routes["items"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["requests"].as_u64() > Some(0))
        .unwrap_or_else(|| panic!("a route with requests: {routes}"))
        .clone();

    let browser = Browser::start().await;
    browser.goto(&format!("{}/#token={token}", server.url(""))).await;
    browser.wait_for("the page to load its data", "return document.body.dataset.state === 'ready' || null").await;

    // The token left the address bar for the tab's session storage.
    let location = browser.execute("return [location.href, sessionStorage.getItem('meshlens.dashboard.token')]").await;
    assert_eq!(location[0], server.url("/"), "{location}");
    assert_eq!(location[1], token.as_str());

    // Overview: the overall mTLS share and the findings by level, as the API has them.
    let mtls = browser.find("[data-testid=overview-mtls]").await;
    assert_eq!(browser.text(&mtls).await, share_text(share));
    assert_eq!(share_text(share), "66.7 %");
    let shown: f64 = browser.attribute(&mtls, "data-value").await.expect("data-value").parse().expect("number");
    assert_eq!(shown, share);
    let requests = browser.find("#overview-requests").await;
    assert_eq!(browser.text(&requests).await, (MUTUAL + PLAINTEXT).to_string());
    for level in ["error", "warning", "info"] {
        let element = browser.find(&format!("[data-testid=overview-findings-{level}]")).await;
        let expected = findings["counts"][level].as_u64().expect("count");
        assert_eq!(browser.text(&element).await, expected.to_string(), "{level} findings");
    }
    let total: u64 = ["error", "warning", "info"].iter().map(|l| findings["counts"][*l].as_u64().unwrap()).sum();
    assert!(total > 0, "the configuration and traffic have findings: {findings}");

    // The graph: the API's nodes, and the plaintext edge marked.
    let drawn = browser
        .execute("return [...document.querySelectorAll('#graph-svg [data-testid=graph-node]')].map(n => n.dataset.id)")
        .await;
    let drawn: BTreeSet<&str> = drawn.as_array().expect("ids").iter().map(|v| v.as_str().expect("id")).collect();
    let nodes: BTreeSet<&str> =
        graph["nodes"].as_array().expect("nodes").iter().map(|n| n["id"].as_str().expect("id")).collect();
    assert_eq!(drawn, nodes);
    assert!(nodes.contains("shop/web") && nodes.contains("default/productpage-v1"), "{graph}");
    let plaintext = browser.find_all("#graph-svg [data-testid=graph-edge][data-mtls=plaintext]").await;
    assert_eq!(plaintext.len(), 1);
    assert_eq!(browser.attribute(&plaintext[0], "data-source").await.as_deref(), Some("shop/web"));

    // mTLS table: one row per edge, with its classification; routes: the used route with its requests.
    let rows = browser.find_all("#mtls-table [data-testid=mtls-row]").await;
    assert_eq!(rows.len() as u64, coverage["total"].as_u64().expect("total"));
    let route_rows = browser.find_all("#routes-table [data-testid=route-row]").await;
    assert_eq!(route_rows.len() as u64, routes["total"].as_u64().expect("total"));
    let mut found_route = false;
    for row in &route_rows {
        if browser.attribute(row, "data-route").await.as_deref() == used_route["route"].as_str() {
            assert_eq!(browser.attribute(row, "data-requests").await, Some(used_route["requests"].to_string()));
            found_route = true;
        }
    }
    assert!(found_route, "no row for {}", used_route["route"]);

    // Charts come through object URLs and load.
    browser.wait_for("the mTLS chart", "return document.getElementById('chart-mtls').dataset.loaded || null").await;
    let chart_src = browser.attribute(&browser.find("#chart-mtls").await, "src").await.unwrap_or_default();
    assert!(chart_src.starts_with("blob:"), "{chart_src}");

    if let Some(path) = std::env::var_os("MESHLENS_DASHBOARD_SCREENSHOT") {
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    // A report made with the button appears in the list, and opens inside the page.
    assert!(browser.find_all("[data-testid=report-row]").await.is_empty());
    browser.click(&browser.find("[data-testid=create-report]").await).await;
    let id = browser
        .wait_for(
            "the new report in the list",
            "const row = document.querySelector('[data-testid=report-row]'); return row ? row.dataset.id : null",
        )
        .await;
    let id = id.as_str().expect("id").to_owned();
    let stored = api(&server, &token, &format!("/api/v1/reports/{id}")).await;
    let open = browser.find(&format!("[data-testid=report-open][data-id='{id}']")).await;
    browser.click(&open).await;
    browser
        .wait_for(
            "the report to open",
            &format!("return document.getElementById('report-viewer').dataset.loaded === '{id}' || null"),
        )
        .await;
    assert_eq!(browser.text(&browser.find("#report-title").await).await, format!("Report #{id}"));
    let frame = browser.find("#report-frame").await;
    assert!(browser.attribute(&frame, "src").await.is_some_and(|src| src.starts_with("blob:")));
    browser.switch_to_frame(&frame).await;
    let heading = browser.text(&browser.find("h1").await).await;
    assert_eq!(heading, format!("meshlens compliance report #{id}"));
    let cards = browser.text(&browser.find(".cards").await).await;
    let percent = stored["summary"]["mtls"]["percent"].as_f64().expect("report mTLS percent");
    assert_eq!(report_percent(percent), "66.667%");
    assert!(cards.contains(&format!("{}\nmTLS (of known)", report_percent(percent))), "{cards}");
    assert!(cards.contains(&format!("{}\nrequests", MUTUAL + PLAINTEXT)), "{cards}");
    browser.switch_to_parent().await;
    assert_eq!(browser.text(&browser.find("#report-title").await).await, format!("Report #{id}"));

    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_dashboard_asks_for_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let token = create_token(&data, "viewer");
    let server = Server::start(&data);
    load(&server, &token).await;

    let browser = Browser::start().await;
    browser.goto(&server.url("/")).await;
    browser.wait_for("the sign-in message", "return document.body.dataset.state === 'unauthorized' || null").await;
    let message = browser.find("[data-testid=auth-message]").await;
    let text = browser.text(&message).await;
    assert!(text.contains("needs an API token") && text.contains("missing bearer token"), "{text}");
    // No data is shown: the overview is empty and hidden.
    let mtls = browser.find("[data-testid=overview-mtls]").await;
    assert_eq!(browser.text(&mtls).await, "");
    assert_eq!(browser.attribute(&mtls, "data-value").await, None);
    assert!(browser.find_all("#graph-svg").await.is_empty());

    // A wrong token is refused the same way.
    let input = browser.find("[data-testid=token-input]").await;
    browser.type_text(&input, &format!("mlk_{}", "0".repeat(64))).await;
    browser.click(&browser.find("[data-testid=token-submit]").await).await;
    browser
        .wait_for(
            "the refusal",
            "const m = document.getElementById('auth-message').textContent; \
             return document.body.dataset.state === 'unauthorized' && m.includes('refused this token') || null",
        )
        .await;
    assert!(browser.text(&message).await.contains("unknown or revoked token"));

    // The right one, typed into the form, shows the data; a viewer may not make reports.
    browser.type_text(&browser.find("[data-testid=token-input]").await, &token).await;
    browser.click(&browser.find("[data-testid=token-submit]").await).await;
    browser.wait_for("the data", "return document.body.dataset.state === 'ready' || null").await;
    assert_eq!(browser.text(&mtls).await, share_text(MUTUAL as f64 / (MUTUAL + PLAINTEXT) as f64));
    browser.click(&browser.find("[data-testid=create-report]").await).await;
    let refusal = browser
        .wait_for(
            "the refusal to make a report",
            "const m = document.getElementById('report-message'); \
             return m.classList.contains('bad') ? m.textContent : null",
        )
        .await;
    assert!(refusal.as_str().is_some_and(|t| t.starts_with("Not allowed") && t.contains("admin")), "{refusal}");

    browser.quit().await;
}
