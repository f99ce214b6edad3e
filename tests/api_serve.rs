//! The REST API of a running `meshlens serve`, end to end: a token made with `meshlens token create`,
//! requests sent to the collector's `/v1/accesslogs`, and the analyses read back over HTTP with a real
//! client (hyper). Also: `--insecure-no-auth` is refused off loopback, and schemathesis finds no server
//! error and no schema violation against the served OpenAPI document.

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_meshlens");

fn bookinfo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-samples/bookinfo/platform/kube/bookinfo.yaml")
}

/// `meshlens token create`'s token: the last line of its stdout.
fn create_token(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(["token", "create", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run meshlens token create");
    assert!(output.status.success(), "token create: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    stdout.lines().last().expect("a line").trim().to_owned()
}

/// A running `meshlens serve`, killed on drop.
struct Server {
    child: Child,
    api: SocketAddr,
    http: SocketAddr,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
            .args(["--api-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("-f")
            .arg(bookinfo())
            .args(extra)
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server-side records, as meshlens JSON lines: `n` mutual requests from default/productpage-v1 to
/// reviews and `n` plaintext ones from shop/web to ratings, in the last minutes.
fn access_log(n: usize) -> String {
    let now = chrono::Utc::now();
    let mut lines = String::new();
    for i in 0..n {
        for (source_namespace, source, service, mtls) in
            [("default", "productpage-v1", "reviews", "mutual"), ("shop", "web", "ratings", "plaintext")]
        {
            let record = json!({
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
                "destination_workload": format!("{service}-v1"),
                "source_namespace": source_namespace,
                "source_workload": source,
                "mtls": mtls,
                "source_format": "meshlens_json",
            });
            lines.push_str(&record.to_string());
            lines.push('\n');
        }
    }
    lines
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

async fn request(method: &str, url: &str, token: Option<&str>, body: String) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut builder = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let response = client.request(builder.body(Full::from(body)).expect("request")).await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, headers, json }
}

/// Feeds the server traffic and waits until the API shows it.
async fn load(server: &Server, token: &str, n: usize) {
    let stored = request("POST", &format!("http://{}/v1/accesslogs", server.http), None, access_log(n)).await;
    assert_eq!(stored.status, 200, "{}", stored.json);
    assert_eq!(stored.json["stored"], 2 * n as u64, "{}", stored.json);
    let graph = request("GET", &format!("http://{}/api/v1/graph", server.api), Some(token), String::new()).await;
    assert_eq!(graph.json["total"], 2, "{}", graph.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_by_the_cli_reads_the_served_analyses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let viewer = create_token(&data, &["--role", "viewer", "--name", "e2e"]);
    let scoped = create_token(&data, &["--role", "viewer", "--namespace", "shop"]);
    assert!(viewer.starts_with("mlk_") && viewer != scoped);

    let server = Server::start(&data, &[]);
    let api = format!("http://{}", server.api);
    load(&server, &viewer, 30).await;

    let graph = request("GET", &format!("{api}/api/v1/graph?window=15m"), Some(&viewer), String::new()).await;
    assert_eq!(graph.status, 200);
    assert!(graph.headers.contains_key("x-request-id"));
    let edges = graph.json["items"].as_array().expect("edges");
    let reviews = edges.iter().find(|e| e["source"] == "default/productpage-v1").expect("productpage edge");
    assert_eq!((reviews["requests"].as_u64(), reviews["errors"].as_u64()), (Some(30), Some(6)));
    assert_eq!(reviews["mtls_share"], 1.0);

    let scoped_graph = request("GET", &format!("{api}/api/v1/graph"), Some(&scoped), String::new()).await;
    assert_eq!(scoped_graph.json["total"], 1, "{}", scoped_graph.json);
    assert_eq!(scoped_graph.json["items"][0]["source"], "shop/web");

    let unauthenticated = request("GET", &format!("{api}/api/v1/findings"), None, String::new()).await;
    assert_eq!((unauthenticated.status, unauthenticated.json["error"]["code"].as_str()), (401, Some("unauthorized")));
    let config = request("GET", &format!("{api}/api/v1/config"), Some(&viewer), String::new()).await;
    assert_eq!(config.json["counts"]["Deployment"], 6, "{}", config.json);
    // The probes stay open.
    assert_eq!(request("GET", &format!("{api}/healthz"), None, String::new()).await.status, 200);

    // Listing shows the use, revoking refuses the token at once, also while the server runs.
    let list = Command::new(BIN).args(["token", "list", "--json", "--data-dir"]).arg(&data).output().expect("list");
    let listed: Value = serde_json::from_slice(&list.stdout).expect("token list --json");
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&viewer), "no secrets listed");
    let id = listed.as_array().unwrap().iter().find(|t| t["name"] == "e2e").expect("e2e token")["id"].to_string();
    let revoke = Command::new(BIN).args(["token", "revoke", &id, "--data-dir"]).arg(&data).output().expect("revoke");
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    let refused = request("GET", &format!("{api}/api/v1/graph"), Some(&viewer), String::new()).await;
    assert_eq!(refused.status, 401);
}

#[test]
fn insecure_no_auth_is_refused_off_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(BIN)
        .args(["serve", "--insecure-no-auth", "--api-addr", "0.0.0.0:0", "--otlp-grpc-addr", "off"])
        .args(["--otlp-http-addr", "off", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure-no-auth") && stderr.contains("loopback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_no_auth_on_loopback_serves_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &["--insecure-no-auth"]);
    let graph = request("GET", &format!("http://{}/api/v1/graph", server.api), None, String::new()).await;
    assert_eq!(graph.status, 200, "{}", graph.json);
}

/// No answer is a 5xx, and every answer matches the document: its status, content type, headers and body
/// schema.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// The Python with schemathesis: `MESHLENS_TEST_PYTHON` (set by .ci/run), else `python3`.
fn python() -> String {
    std::env::var("MESHLENS_TEST_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let python = python();
    let check = Command::new(&python).args(["-c", "import schemathesis"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "schemathesis is not installed for {python} (.ci/run installs it into MESHLENS_TEST_PYTHON's venv)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let admin = create_token(&data, &["--role", "admin"]);
    let server = Server::start(&data, &[]);
    load(&server, &admin, 50).await;

    let cli = Path::new(&python).with_file_name("schemathesis");
    let program = if cli.exists() { cli.into_os_string() } else { "schemathesis".into() };
    let output = tokio::task::spawn_blocking({
        let url = format!("http://{}/api/v1/openapi.json", server.api);
        let workdir = dir.path().to_owned();
        move || {
            Command::new(program)
                .args(["run", &url, "--header", &format!("Authorization: Bearer {admin}")])
                .args(["--checks", CHECKS, "--max-examples", "30", "--rate-limit", "40/s", "--no-color"])
                // Revoking random token ids would revoke the run's own token; the router tests cover it.
                .args(["--exclude-method", "DELETE", "--generation-database", "none"])
                .current_dir(workdir)
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("schemathesis task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis failed:\n{stdout}\n{stderr}");
}
