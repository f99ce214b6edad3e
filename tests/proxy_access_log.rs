//! The proxy's access logs parse back through the collector with identical fields: the real `meshlens proxy
//! ingress` binary writes JSON records; the collector reads them back unchanged, and the Istio TEXT line the
//! proxy renders for each record parses back to the same values for every field the text format carries.

use meshlens_collector::{LineFormat, parse_line};
use meshlens_model::RequestRecord;
use meshlens_proxy::telemetry::{LogEntry, istio_text};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A backend answering every request with `200 ok` and closing the connection.
fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the ingress and returns it with the address its port 80 listener bound.
fn start_ingress(config: &[std::path::PathBuf], log: &std::path::Path) -> (Proxy, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshlens"));
    command.args(["proxy", "ingress", "--listen", "80=127.0.0.1:0", "--access-log-format", "json", "--access-log"]);
    command.arg(log);
    for file in config {
        command.arg("-f").arg(file);
    }
    let mut child = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("start meshlens proxy");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let proxy = Proxy(child);
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(addr) = line.split(" listening on ").nth(1).filter(|_| line.contains("port-80")) {
            return (proxy, addr.trim().to_owned());
        }
    }
    panic!("the proxy exited without logging its listener");
}

fn get(addr: &str, path: &str, request_id: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: bookinfo.example.com\r\nuser-agent: roundtrip/1\r\nx-request-id: {request_id}\r\n\
         x-forwarded-for: 203.0.113.9\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn read_records(log: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fields Istio's TEXT format carries, directly or through the collector's derivations. Direction is
/// derived from the upstream cluster, so a request that never got one (404 NR) cannot carry it in text.
fn text_fields(r: &RequestRecord) -> serde_json::Value {
    let direction = r.upstream_cluster.as_ref().map(|_| r.direction);
    serde_json::json!({
        "timestamp": r.timestamp.timestamp_millis(), "method": r.method, "path": r.path, "protocol": r.protocol,
        "status": r.status, "response_flags": r.response_flags, "response_code_details": r.response_code_details,
        "bytes_received": r.bytes_received, "bytes_sent": r.bytes_sent, "duration_ms": r.duration_ms,
        "upstream_service_time_ms": r.upstream_service_time_ms, "x_forwarded_for": r.x_forwarded_for,
        "user_agent": r.user_agent, "request_id": r.request_id, "authority": r.authority,
        "upstream_host": r.upstream_host, "upstream_cluster": r.upstream_cluster,
        "downstream_local_address": r.downstream_local_address, "downstream_remote_address": r.downstream_remote_address,
        "requested_server_name": r.requested_server_name, "route_name": r.route_name, "direction": direction,
        "destination_service": r.destination_service, "destination_port": r.destination_port,
        "destination_subset": r.destination_subset, "destination_namespace": r.destination_namespace,
    })
}

#[test]
fn proxy_access_logs_parse_back_with_identical_fields() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-samples/bookinfo");
    let workload = dir.path().join("workload.yaml");
    std::fs::write(
        &workload,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: productpage-v1, namespace: default}}\n\
             spec: {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: productpage}}, serviceAccount: bookinfo-productpage}}\n",
            backend()
        ),
    )
    .unwrap();
    let config =
        [fixtures.join("platform/kube/bookinfo.yaml"), fixtures.join("platform/kube/bookinfo-ingress.yaml"), workload];
    let log = dir.path().join("access.jsonl");
    let (_proxy, addr) = start_ingress(&config, &log);

    assert!(get(&addr, "/productpage", "req-ok").starts_with("HTTP/1.1 200"));
    assert!(get(&addr, "/nowhere", "req-nr").starts_with("HTTP/1.1 404"));
    let lines = read_records(&log, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");

    for line in &lines {
        let written: RequestRecord = serde_json::from_str(line).expect("the JSON log is the model's record");
        let json_back = parse_line(line, LineFormat::Auto).expect("collector reads the proxy's JSON");
        assert_eq!(json_back, written, "JSON round trip");

        let mut text = String::new();
        istio_text(&mut text, &LogEntry { record: written.clone(), ..Default::default() });
        let text_back = parse_line(&text, LineFormat::IstioText).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(text_fields(&text_back), text_fields(&written), "text round trip of {text}");
    }
    let ok: RequestRecord = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(ok.request_id.as_deref(), Some("req-ok"));
    assert_eq!(ok.destination_service.as_deref(), Some("productpage.default.svc.cluster.local"));
    let nr: RequestRecord = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!((nr.status, nr.response_flags.as_slice()), (Some(404), ["NR".to_owned()].as_slice()));
}
