//! End to end: the real `meshlens demo` — CA, `serve`, sidecars and ingress as child processes, apps, traffic
//! — for about 20 seconds. Every planted problem must be reported, nothing else of level Error, and the
//! mTLS coverage must agree with what the traffic generator knows it sent. A second run is stopped with
//! Ctrl-C (SIGINT) and must still print its summary and leave no process behind.
//!
//! Both runs use the demo's fixed loopback addresses (127.0.10.x), so they take turns.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshlens");

/// The demo's addresses are fixed; one demo at a time.
static DEMO: Mutex<()> = Mutex::new(());

/// Every listener the demo's proxies bind: the ingress, and each sidecar's inbound, outbound and admin.
fn demo_listeners() -> Vec<SocketAddr> {
    let mut addrs = vec!["127.0.10.2:8000".parse().unwrap(), "127.0.10.2:15000".parse().unwrap()];
    for host in 10..=15 {
        for port in [9080, 15001, 15000] {
            addrs.push(format!("127.0.10.{host}:{port}").parse().unwrap());
        }
    }
    addrs
}

fn summary(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no number at {pointer}"))
}

#[test]
fn demo_reports_every_planted_problem_and_the_plaintext_it_sent() {
    let _turn = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let output = Command::new(BIN)
        .args(["demo", "--duration", "20s", "--api-addr", "127.0.0.1:0", "--rate", "25", "--data-dir"])
        .arg(dir.path().join("demo"))
        .arg("--summary-json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.contains("Planted problems:"), "{stdout}");
    let s = summary(&json);

    for planted in s["planted"].as_array().unwrap() {
        assert_eq!(planted["found"], true, "planted problem not reported: {planted}\n{stdout}");
    }
    // Through the REST API too, when this build serves `GET /api/v1/findings`.
    if !s["api_view"].is_null() {
        for planted in s["planted"].as_array().unwrap() {
            assert_eq!(planted["in_api"], true, "not reported by GET /api/v1/findings: {planted}\n{}", s["api_view"]);
        }
        let items = s["api_view"]["findings"]["items"].as_array().unwrap();
        assert!(items.iter().all(|f| f["level"] != "Error"), "{items:#?}");
    }
    let findings = s["findings"].as_array().unwrap();
    let unplanted_errors: Vec<&Value> =
        findings.iter().filter(|f| f["level"] == "Error" && f["planted"].is_null()).collect();
    assert!(unplanted_errors.is_empty(), "{unplanted_errors:#?}");
    for (code, planted) in
        [("ML1007", "permissive-plaintext"), ("ML2002", "permissive-plaintext"), ("ML2012", "retry-on-post")]
    {
        assert!(
            findings.iter().any(|f| f["code"] == code && f["planted"] == planted),
            "{code} not reported as {planted}: {findings:#?}"
        );
    }

    // The generator's own counts against the analyses of what the proxies logged.
    let sent_plaintext = u64_at(&s, "/traffic/plaintext_answered");
    let ingress = u64_at(&s, "/traffic/ingress_answered");
    assert!(sent_plaintext > 0 && ingress > 100, "too little traffic: {}", s["traffic"]);
    assert_eq!(u64_at(&s, "/shipped/rejected"), 0, "{}", s["shipped"]);
    assert_eq!(u64_at(&s, "/shipped/stored"), u64_at(&s, "/shipped/lines"));
    let mtls = &s["analysis"]["mtls"];
    assert_eq!(u64_at(mtls, "/overall/plaintext"), sent_plaintext, "plaintext seen vs sent: {mtls:#}");
    assert_eq!(u64_at(mtls, "/overall/unknown"), 0, "{mtls:#}");
    let bookinfo = mtls["namespaces"].as_array().unwrap().iter().find(|n| n["namespace"] == "bookinfo").unwrap();
    assert_eq!(bookinfo["plaintext_sources"], serde_json::json!({"legacy/report-job": sent_plaintext}));
    let edge = |source: &str, destination: &str| {
        mtls["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == source && e["destination"] == destination)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {source} -> {destination}: {mtls:#}"))
    };
    let legacy = edge("legacy/report-job", "details.bookinfo.svc.cluster.local");
    assert_eq!((u64_at(&legacy, "/plaintext"), u64_at(&legacy, "/mutual")), (sent_plaintext, 0));
    // Every answered request through the ingress reached productpage once, over mTLS.
    let front = edge("istio-system/istio-ingressgateway", "productpage.bookinfo.svc.cluster.local");
    assert_eq!((u64_at(&front, "/mutual"), u64_at(&front, "/plaintext")), (ingress, 0));
    assert_eq!(u64_at(mtls, "/overall/mutual") + sent_plaintext, u64_at(mtls, "/overall/requests"));

    // Retries at work: ratings' 503s were retried, and the callers' reads all succeeded.
    let ratings = s["analysis"]["resilience"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "ratings.bookinfo.svc.cluster.local")
        .unwrap()
        .clone();
    assert!(u64_at(&ratings, "/retries/retried") > 0, "{ratings:#}");
    let pages = &s["traffic"]["by_kind"]["page"];
    assert_eq!(pages["statuses"]["200"], pages["sent"], "{pages}");

    // The 80/10/10 split, loosely: v1 takes most.
    let split = s["analysis"]["routes"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| r["split"].as_object().cloned())
        .expect("the reviews split");
    let v1 = split["destinations"].as_array().unwrap().iter().find(|d| d["subset"] == "v1").unwrap();
    let share = v1["observed_percent"].as_f64().unwrap();
    assert!((60.0..=95.0).contains(&share), "v1 got {share}% of reviews");
    assert_eq!(s["clean_shutdown"], true, "a child did not stop cleanly on SIGTERM");

    // A compliance report of the run, made and stored through `POST /api/v1/reports`, listed by
    // `GET /api/v1/reports` and fetched back as HTML and JSON, tells the same story.
    let compliance = &s["compliance"];
    assert!(compliance.is_object(), "no compliance report in the summary\n{stdout}\n{stderr}");
    assert_eq!(compliance["listed"], true, "{compliance}");
    assert_eq!(compliance["passed"], false, "the planted plaintext must fail the demo's policy: {compliance}");
    assert!(stdout.contains(&format!("Compliance report #{} fails", compliance["id"])), "{stdout}");
    let read = |key: &str| std::fs::read_to_string(compliance[key].as_str().unwrap()).unwrap();
    let report: Value = serde_json::from_str(&read("json")).unwrap();
    assert_eq!(u64_at(&report, "/mtls/overall/plaintext"), sent_plaintext, "{:#}", report["mtls"]);
    assert_eq!(u64_at(&report, "/mtls/overall/mutual"), u64_at(mtls, "/overall/mutual"));
    let plaintext_edge = &report["plaintext_edges"][0];
    assert_eq!(plaintext_edge["source"], "legacy/report-job", "{:#}", report["plaintext_edges"]);
    assert_eq!(report["policy"]["passed"], false, "{:#}", report["policy"]);
    let html = read("html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..html.len().min(200)]);
    assert!(
        html.contains("<svg") && html.contains("legacy/report-job"),
        "the HTML report lacks its chart or the plaintext edge"
    );
}

#[test]
fn ctrl_c_stops_every_process_and_still_prints_the_summary() {
    let _turn = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--api-addr", "127.0.0.1:0", "--rate", "20", "--data-dir"])
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut api = None;
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the demo exited during start-up");
        if let Some(url) = line.trim().strip_prefix("meshlens demo: API        http://") {
            api = url.split('/').next().map(str::to_owned);
        }
        if line.contains("requests/s") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    std::thread::sleep(Duration::from_secs(5));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());

    let deadline = Instant::now() + Duration::from_secs(90);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop within 90 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    // 0 or 1: a few seconds of traffic may not show every traffic finding; 2 would be a failure to run.
    assert!(matches!(exit.code(), Some(0 | 1)), "exit {exit}\n{stdout}");
    assert!(stdout.contains("mTLS coverage:"), "{stdout}");
    let s = summary(&dir.path().join("demo/summary.json"));
    assert_eq!(s["clean_shutdown"], true);
    assert_eq!(u64_at(&s, "/analysis/mtls/overall/plaintext"), u64_at(&s, "/traffic/plaintext_answered"));

    // Nothing is left listening: every proxy's address and the API can be bound again.
    let api: SocketAddr = api.expect("the API address on stderr").parse().unwrap();
    for addr in demo_listeners().into_iter().chain([api]) {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} still bound after the demo stopped: {e}"));
    }
}
