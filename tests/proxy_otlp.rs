//! The proxy's OTLP export end to end: a real `meshlens serve`, and a real sidecar pair (`meshlens proxy
//! sidecar`, mTLS from a mesh CA, PeerAuthentication STRICT) exporting to it with `--otlp-endpoint`. The
//! collector must hold one trace per request across both hops (server and client spans, parent to child,
//! continuing the caller's `traceparent`), nothing but logs for an unsampled caller, and a request record
//! per side from the OTLP log records with the same facts as the proxies' own JSON access logs.

#[path = "collector/harness.rs"]
#[allow(dead_code)] // this binary uses a part of the collector tests' harness
mod harness;

use harness::{BIN, Collector};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PRODUCTPAGE_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

/// A port nothing listens on now (the proxies bind their workload's address and port from the config).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The reviews app: `200 reviews` to everything, closing each connection.
fn app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nreviews");
        }
    });
    addr
}

/// A `meshlens proxy sidecar` process; SIGTERM on `stop` (which must flush and exit 0), killed on drop.
struct Sidecar {
    child: Child,
    listeners: BTreeMap<String, SocketAddr>,
}

impl Sidecar {
    fn start(dir: &Path, workload: &str, app: SocketAddr, log: &Path, otlp: &str) -> Sidecar {
        let mut child = Command::new(BIN)
            .args(["proxy", "sidecar", "--workload", workload, "--outbound", "127.0.0.1:0", "--app"])
            .arg(app.to_string())
            .arg("-f")
            .arg(dir.join("mesh.yaml"))
            .arg("--ca-dir")
            .arg(dir.join("ca"))
            .args(["--access-log-format", "json", "--access-log"])
            .arg(log)
            .args(["--otlp-endpoint", otlp])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        // Forward the proxy's stderr to the test's (shown on failure) and report its listeners.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[proxy] {line}");
                let _ = tx.send(line);
            }
        });
        let mut sidecar = Sidecar { child, listeners: BTreeMap::new() };
        while !sidecar.listeners.contains_key("outbound") {
            let line = rx.recv_timeout(Duration::from_secs(30)).expect("the sidecar exited without listening");
            if let Some((name, addr)) =
                line.strip_prefix("meshlens proxy: ").and_then(|l| l.split_once(" listening on "))
            {
                sidecar.listeners.insert(name.to_owned(), addr.trim().parse().unwrap());
            }
        }
        sidecar
    }

    fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the sidecar exited with {exit}");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the app sends through its sidecar's outbound listener (an HTTP proxy): status and body.
fn call(outbound: SocketAddr, request_id: &str, traceparent: Option<&str>) -> String {
    let mut stream = TcpStream::connect(outbound).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let traceparent = traceparent.map(|t| format!("traceparent: {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "GET http://reviews:9080/reviews/1 HTTP/1.1\r\nhost: reviews:9080\r\nx-request-id: {request_id}\r\n\
         {traceparent}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn mesh(dir: &Path, reviews_port: u16, productpage_port: u16) {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec: {{selector: {{app: reviews}}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: productpage, namespace: default}}
spec: {{selector: {{app: productpage}}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {reviews_port}}}
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: productpage-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {productpage_port}}}
  labels: {{app: productpage, security.istio.io/tlsMode: istio}}
  serviceAccount: bookinfo-productpage
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - name: reviews-route
    route: [{{destination: {{host: reviews}}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
"#
    );
    std::fs::write(dir.join("mesh.yaml"), yaml).unwrap();
    let out = Command::new(BIN).args(["ca", "init", "--ca-dir"]).arg(dir.join("ca")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn json_log(path: &PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// The attributes column of a span row, as a map.
fn attributes(row: &Value) -> BTreeMap<String, String> {
    serde_json::from_str(row["attributes"].as_str().unwrap()).unwrap()
}

/// The fields a request record carries about identity, security, routing and outcome.
const FIELDS: [&str; 17] = [
    "request_id",
    "trace_id",
    "span_id",
    "reporter",
    "direction",
    "status",
    "response_code_details",
    "route_name",
    "upstream_cluster",
    "destination_service",
    "mtls",
    "source_principal",
    "destination_principal",
    "source_workload",
    "destination_workload",
    "requested_server_name",
    "attempts",
];

fn project(record: &Value) -> Value {
    FIELDS.iter().map(|f| (f.to_string(), record[*f].clone())).collect::<serde_json::Map<_, _>>().into()
}

#[test]
fn a_sidecar_pair_exports_one_trace_per_request_and_its_access_logs_over_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let (reviews_port, productpage_port) = (free_port(), free_port());
    mesh(dir.path(), reviews_port, productpage_port);
    let mut collector = Collector::start();
    let otlp = format!("http://{}", collector.http);
    let (reviews_log, productpage_log) = (dir.path().join("reviews.jsonl"), dir.path().join("productpage.jsonl"));
    let reviews = Sidecar::start(dir.path(), "default/reviews-1", app(), &reviews_log, &otlp);
    let unused_app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let productpage = Sidecar::start(dir.path(), "default/productpage-1", unused_app, &productpage_log, &otlp);
    assert_eq!(reviews.listeners[&format!("inbound-{reviews_port}")].port(), reviews_port);
    let outbound = productpage.listeners["outbound"];

    // A caller that sampled its trace, one without a trace, and one that did not sample.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let sampled = format!("00-{caller_trace}-{caller_span}-01");
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    for (id, traceparent) in
        [("req-sampled", Some(sampled.as_str())), ("req-root", None), ("req-unsampled", Some(unsampled))]
    {
        let answer = call(outbound, id, traceparent);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("reviews"), "{answer}");
    }
    // SIGTERM: each proxy sends what it still has queued before it exits.
    productpage.stop();
    reviews.stop();
    collector.stop();

    // --- spans: the caller's trace continues through both hops, parent to child
    let rows = collector.query(&format!(
        "SELECT span_id, parent_span_id, kind, name, service_name, service_namespace, http_method, http_status_code, \
         http_url, http_route, peer_service, upstream_cluster, request_id, status_code, attributes \
         FROM spans WHERE trace_id = '{caller_trace}' ORDER BY start_time"
    ));
    assert_eq!(rows.len(), 4, "server and client span on each side: {rows:#?}");
    let (outbound_server, outbound_client, inbound_server, inbound_client) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    assert_eq!(outbound_server["parent_span_id"], caller_span, "the first span continues the caller's");
    assert_eq!(outbound_client["parent_span_id"], outbound_server["span_id"]);
    assert_eq!(inbound_server["parent_span_id"], outbound_client["span_id"], "traceparent crossed the mTLS hop");
    assert_eq!(inbound_client["parent_span_id"], inbound_server["span_id"]);
    let kinds: Vec<_> =
        rows.iter().map(|r| (r["kind"].as_str().unwrap(), r["service_name"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [("server", "productpage-1"), ("client", "productpage-1"), ("server", "reviews-1"), ("client", "reviews-1")]
    );
    for row in &rows {
        assert_eq!(row["service_namespace"], "default");
        assert_eq!(row["http_method"], "GET");
        assert_eq!(row["http_status_code"], 200);
        assert_eq!(row["status_code"], "unset");
        assert_eq!(row["request_id"], "req-sampled");
        assert_eq!(row["peer_service"], "reviews.default.svc.cluster.local");
        assert_eq!(row["name"], "reviews.default.svc.cluster.local:9080/*");
    }
    assert_eq!(outbound_server["http_route"], "reviews-route");
    assert_eq!(outbound_client["http_route"], "reviews-route");
    assert_eq!(outbound_client["upstream_cluster"], "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(outbound_client["http_url"], "http://reviews:9080/reviews/1");
    assert_eq!(outbound_server["http_url"], "/reviews/1");
    // mTLS and identities, in Istio's attribute vocabulary, on both sides of the hop.
    let client = attributes(outbound_client);
    assert_eq!(client["connection.mtls"], "true");
    assert_eq!(client["source.principal"], PRODUCTPAGE_ID);
    assert_eq!(client["destination.principal"], REVIEWS_ID);
    assert_eq!(client["destination.workload.name"], "reviews-1");
    assert_eq!(client["upstream_address"], format!("127.0.0.1:{reviews_port}"));
    let server = attributes(inbound_server);
    assert_eq!(server["connection.mtls"], "true");
    assert_eq!(server["source.principal"], PRODUCTPAGE_ID);
    assert_eq!(server["source.workload.name"], "productpage-1");
    assert_eq!(server["destination.principal"], REVIEWS_ID);
    assert_eq!(server["istio.reporter"], "destination");
    assert_eq!(attributes(inbound_client)["connection.mtls"], "false", "the app is reached in plaintext");

    // A request without traceparent starts a trace (sampled at the default ratio 1); an unsampled caller
    // gets no spans at all.
    let root = collector.query(
        "SELECT trace_id, count(*) AS n, count(parent_span_id) AS with_parent FROM spans \
         WHERE request_id = 'req-root' GROUP BY trace_id",
    );
    assert_eq!(root.len(), 1, "one trace: {root:?}");
    assert_eq!((&root[0]["n"], &root[0]["with_parent"]), (&json!(4), &json!(3)), "{root:?}");
    let unsampled_spans = collector.query("SELECT count(*) AS n FROM spans WHERE request_id = 'req-unsampled'");
    assert_eq!(unsampled_spans, [json!({"n": 0})]);
    assert_eq!(collector.query("SELECT count(*) AS n FROM spans"), [json!({"n": 8})]);

    // --- request records from the OTLP logs: both sides of every request, the same facts as the proxies'
    // own JSON access logs (sampled or not)
    let columns = FIELDS.join(", ");
    let stored =
        collector.query(&format!("SELECT {columns}, source_format FROM requests ORDER BY request_id, reporter"));
    assert_eq!(stored.len(), 6, "{stored:#?}");
    assert!(stored.iter().all(|r| r["source_format"] == "otlp_log"), "{stored:#?}");
    let mut written: Vec<Value> = json_log(&productpage_log).into_iter().chain(json_log(&reviews_log)).collect();
    written.sort_by_key(|r| (r["request_id"].as_str().unwrap().to_owned(), r["reporter"].as_str().unwrap().to_owned()));
    let stored: Vec<Value> = stored.iter().map(project).collect();
    let written: Vec<Value> = written.iter().map(project).collect();
    assert_eq!(stored, written);

    let sampled_records: Vec<&Value> = stored.iter().filter(|r| r["request_id"] == "req-sampled").collect();
    let (destination, source) = (sampled_records[0], sampled_records[1]);
    assert_eq!((&source["reporter"], &destination["reporter"]), (&json!("source"), &json!("destination")));
    for record in [source, destination] {
        assert_eq!(record["mtls"], "mutual");
        assert_eq!(record["status"], 200);
        assert_eq!(record["trace_id"], caller_trace);
        assert_eq!(record["source_workload"], "productpage-1");
        assert_eq!(record["destination_workload"], "reviews-1");
        assert_eq!(record["response_code_details"], "via_upstream");
    }
    assert_eq!(source["route_name"], "reviews-route");
    assert_eq!(source["destination_principal"], REVIEWS_ID);
    assert_eq!(destination["source_principal"], PRODUCTPAGE_ID);
    assert_eq!(destination["requested_server_name"], "outbound_.9080_._.reviews.default.svc.cluster.local");
    // Each record names its hop's server span.
    assert_eq!(source["span_id"], outbound_server["span_id"]);
    assert_eq!(destination["span_id"], inbound_server["span_id"]);
}
