//! The must-show of scheduled reports, with the real binary: a schedule is created through the API of a
//! running `meshlens serve`, the server is stopped before the schedule is due and started again after, and
//! the report of the missed due time is produced at the first tick of the new process, delivered to a
//! local webhook receiver (axum, in this test), and its delivery status is visible through the API.
//!
//! Also `meshlens report` offline: the renderings on stdout, `--store` into the history the server shows,
//! and exit status 1 when the policy fails.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshlens");

const CONFIG: &str = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: payments}
spec:
  mtls: {mode: STRICT}
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: payments}
spec:
  selector: {app: ledger}
  ports: [{name: http, port: 8080}]
";

/// `meshlens serve` on free loopback ports over `data_dir`, authentication off (loopback only).
struct Server {
    child: Child,
    api: SocketAddr,
}

impl Server {
    fn start(data_dir: &Path, config: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--otlp-grpc-addr", "off", "--otlp-http-addr", "off", "--api-addr", "127.0.0.1:0"])
            .args(["--insecure-no-auth", "--data-dir"])
            .arg(data_dir)
            .arg("-f")
            .arg(config)
            .env("RUST_LOG", "meshlens_api=info")
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
        let api = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("api="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no api address in {line:?}"));
        Server { child, api }
    }

    /// SIGTERM, and a clean exit (the ticker stops, the store closes).
    fn stop(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        assert!(exit.success(), "meshlens serve exited with {exit}");
    }

    /// One HTTP/1.1 request; the status and body of the answer.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.api).expect("connect to the API");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.api,
            body.len()
        )
        .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read answer");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let content_type = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
            .unwrap_or_default();
        (status, content_type, body.to_owned())
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, _, text) = self.request(method, path, body);
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A webhook receiver on a loopback port, in its own thread and runtime.
fn webhook_receiver() -> (String, Received) {
    async fn hook(State(received): State<Received>, headers: HeaderMap, body: String) -> StatusCode {
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        received.lock().expect("lock").push((headers, json));
        StatusCode::OK
    }
    let received = Received::default();
    let state = Arc::clone(&received);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send address");
            let app = Router::new().route("/hook", post(hook)).with_state(state);
            axum::serve(listener, app).await.expect("serve");
        });
    });
    let addr = rx.recv().expect("receiver address");
    (format!("http://{addr}/hook"), received)
}

/// A cron expression (with seconds) that fires once, at `at` (to the second, UTC).
fn cron_at(at: DateTime<Utc>) -> String {
    format!("{} {} {} {} {} *", at.second(), at.minute(), at.hour(), at.day(), at.month())
}

fn wait_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_schedule_survives_a_restart_and_its_report_is_delivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let (webhook_url, received) = webhook_receiver();

    let mut server = Server::start(&data_dir, &config);
    // Due in 6 s (whole seconds); the server will be down then.
    let due = (Utc::now() + TimeDelta::seconds(6)).with_nanosecond(0).expect("whole second");
    let schedule = json!({
        "name": "nightly-compliance",
        "cron": cron_at(due),
        "window": "1h",
        "policy": {"mtls_min_percent": 99.9, "max_findings": {"error": 0}},
        "formats": ["json", "html"],
        "webhook_url": webhook_url,
    });
    let (status, created) = server.json("POST", "/api/v1/schedules", Some(&schedule));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("schedule id");
    let next_run: DateTime<Utc> = serde_json::from_value(created["next_run"].clone()).expect("next_run");
    assert_eq!(next_run, due);
    server.stop();

    // Down past the due time: nothing runs, nothing is sent.
    while Utc::now() < due + TimeDelta::seconds(2) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(received.lock().expect("lock").is_empty());

    let mut server = Server::start(&data_dir, &config);
    wait_until(Duration::from_secs(30), "the webhook delivery", || !received.lock().expect("lock").is_empty());
    // The delivery is recorded right after the POST returns.
    let mut view = Value::Null;
    wait_until(Duration::from_secs(10), "the delivered status", || {
        let (status, body) = server.json("GET", &format!("/api/v1/schedules/{id}"), None);
        assert_eq!(status, 200, "{body}");
        view = body;
        view["deliveries"][0]["status"] == "delivered"
    });
    let delivery = &view["deliveries"][0];
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status"], 200);
    assert!(delivery["delivered_at"].is_string());
    assert_eq!(view["deliveries"].as_array().map(Vec::len), Some(1), "one run, one delivery: {view}");
    let report_id = delivery["report_id"].as_i64().expect("report id");
    assert_eq!(view["last_report_id"], report_id);

    let payloads = received.lock().expect("lock").clone();
    assert_eq!(payloads.len(), 1, "delivered once");
    let (headers, payload) = &payloads[0];
    assert_eq!(headers["x-meshlens-delivery"], delivery["id"].to_string().as_str());
    assert_eq!(payload["schedule"]["id"], id);
    assert_eq!(payload["report"]["id"], report_id);
    assert_eq!(payload["report"]["passed"], true, "no traffic: nothing fails 99.9% or the finding limit");
    let window_end: DateTime<Utc> = serde_json::from_value(payload["report"]["window"]["end"].clone()).expect("end");
    assert_eq!(window_end, due, "the report is the missed run's, for its due time");
    assert!(payload["renderings"]["html"].as_str().is_some_and(|h| h.starts_with("<!DOCTYPE html>")));
    assert_eq!(payload["renderings"]["json"]["config"]["resources"]["PeerAuthentication"], 1);

    // The stored report is in the history and renders.
    let (status, history) = server.json("GET", "/api/v1/reports", None);
    assert_eq!(status, 200);
    assert_eq!(history["reports"][0]["id"], report_id);
    assert_eq!(history["reports"][0]["schedule_id"], id);
    let (status, content_type, html) = server.request("GET", &format!("/api/v1/reports/{report_id}?format=html"), None);
    assert_eq!((status, content_type.as_str()), (200, "text/html; charset=utf-8"));
    assert!(html.contains("meshlens compliance report"));
    server.stop();
}

#[test]
fn offline_reports_render_store_and_fail_the_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    // A store must exist: a server that ran once makes it.
    let mut server = Server::start(&data_dir, &config);
    server.stop();

    let report = |args: &[&str]| {
        Command::new(BIN)
            .arg("report")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("-f")
            .arg(&config)
            .args(args)
            .output()
            .expect("run")
    };
    let md = report(&["-o", "md", "--window", "2h"]);
    assert_eq!(md.status.code(), Some(0), "{}", String::from_utf8_lossy(&md.stderr));
    assert!(String::from_utf8_lossy(&md.stdout).starts_with("# meshlens compliance report\n"));

    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "min_requests: 1\n").expect("policy");
    let out = dir.path().join("report.html");
    let failed = report(&[
        "--policy",
        policy.to_str().expect("utf-8"),
        "--output-file",
        out.to_str().expect("utf-8"),
        "--store",
    ]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "policy fails: {stderr}");
    assert!(stderr.contains("stored report 1"), "{stderr}");
    assert!(stderr.contains("policy: min_requests failed"), "{stderr}");
    let html = std::fs::read_to_string(&out).expect("output file");
    assert!(html.contains("FAILED") && html.contains("#1"));

    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "min_request: 1\n").expect("policy");
    let rejected = report(&["--policy", typo.to_str().expect("utf-8")]);
    assert_eq!(rejected.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(stderr.contains("typo.yaml:1:1: field min_request: unknown field `min_request`"), "{stderr}");

    // The stored report is the server's history, with the trend of the next one against it.
    let json = report(&["-o", "json", "--store"]);
    let second: Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert_eq!(second["trend"]["previous_id"], 1);
    let mut server = Server::start(&data_dir, &config);
    let (status, history) = server.json("GET", "/api/v1/reports", None);
    assert_eq!(status, 200);
    assert_eq!(history["total"], 2);
    assert_eq!(history["reports"][1]["passed"], false);
    server.stop();
}
