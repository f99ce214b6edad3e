//! Protocols and hostile input: HTTP/2 (h2c and ALPN), oversized headers, bad chunking, a broken HTTP/2
//! preface, the connection limit, the admin listener, and config reloads that neither drop in-flight
//! requests nor accept a broken config.

mod common;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshlens_proxy::{AccessLogFormat, IngressOptions, Limits, Running, start_ingress};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn mesh(backend_port: u16, paths: &[&str]) -> String {
    let matches: Vec<String> = paths.iter().map(|p| format!("{{uri: {{prefix: \"{p}\"}}}}")).collect();
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{selector: {{app: web}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: web-1, namespace: shop}}
spec: {{address: 127.0.0.1, ports: {{http: {backend_port}}}, labels: {{app: web}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec:
  servers:
  - {{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}
  - {{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ["*"], tls: {{mode: SIMPLE, credentialName: web-cert}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec: {{hosts: ["*"], gateways: [gw], http: [{{match: [{}], route: [{{destination: {{host: web}}}}]}}]}}
"#,
        matches.join(", ")
    )
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    ca_pem: String,
    proxy: Running,
}

async fn setup(backend: &Backend, limits: Limits) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let ca_pem = credential(&creds, "web-cert", "web.example.com", None);
    let config = write(dir.path(), "mesh.yaml", &mesh(backend.addr.port(), &["/"]));
    let mut common = common(vec![config.clone()], &dir.path().join("access.log"), AccessLogFormat::Json);
    common.limits = limits;
    common.admin = Some("127.0.0.1:0".parse().unwrap());
    let options = IngressOptions {
        common,
        listen: BTreeMap::from([(80, "127.0.0.1:0".parse().unwrap()), (443, "127.0.0.1:0".parse().unwrap())]),
        credential_dir: Some(creds),
    };
    let proxy = start_ingress(options).await.unwrap();
    Setup { dir, config, ca_pem, proxy }
}

/// Writes raw bytes and reads until the proxy closes or `limit` passes; returns what came back.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serving(addr: SocketAddr) {
    assert_eq!(get(addr, "web.example.com", "/").await.status, 200, "the proxy keeps serving");
}

#[tokio::test]
async fn malformed_requests_are_answered_or_closed_and_the_proxy_keeps_serving() {
    let backend = Backend::start("ok").await;
    let limits = Limits { max_header_bytes: 16 * 1024, ..Limits::default() };
    let s = setup(&backend, limits).await;
    let addr = s.proxy.addr("port-80").unwrap();

    let huge = format!("GET / HTTP/1.1\r\nHost: web.example.com\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let answer = raw(addr, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    still_serving(addr).await;

    let bad_chunk =
        "POST / HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n";
    let answer = raw(addr, bad_chunk.as_bytes()).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer:.80}");
    still_serving(addr).await;

    let answer = raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x99garbage").await;
    assert!(!answer.contains("200 OK"), "{answer:.80}");
    still_serving(addr).await;

    let answer = raw(addr, b"\x16\x03\x01garbage that is not a TLS client hello").await;
    assert!(!answer.contains("200"), "{answer:.80}");
    let answer = raw(addr, b"GET /\0 HTTP/1.1\r\n\r\n").await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer:.80}");
    still_serving(addr).await;
    assert_eq!(backend.hits(), 4, "nothing malformed reached the backend");
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn http2_prior_knowledge_and_alpn_h2_are_served() {
    let backend = Backend::start("ok").await;
    let s = setup(&backend, Limits::default()).await;

    let stream = TcpStream::connect(s.proxy.addr("port-80").unwrap()).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let request =
            http::Request::builder().uri("http://web.example.com/h2c").body(Full::new(bytes::Bytes::new())).unwrap();
        let response = h2.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    let mut config = client_config(&s.ca_pem, None);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(s.proxy.addr("port-443").unwrap()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("web.example.com").unwrap();
    let tls = connector.connect(name, stream).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request =
        http::Request::builder().uri("https://web.example.com/alpn").body(Full::new(bytes::Bytes::new())).unwrap();
    assert_eq!(h2.send_request(request).await.unwrap().status(), 200);

    let records = json_records(&log_lines(&s.dir.path().join("access.log"), 4).await);
    assert!(records.iter().all(|r| r.protocol.as_deref() == Some("HTTP/2.0")), "{records:?}");
    assert!(records.iter().any(|r| r.requested_server_name.as_deref() == Some("web.example.com")));
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let backend = Backend::start("ok").await;
    let s = setup(&backend, Limits { max_connections: 1, ..Limits::default() }).await;
    let addr = s.proxy.addr("port-80").unwrap();
    let held = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(try_get(addr, "web.example.com", "/").await.is_err());
    drop(held);
    // The slot frees once the proxy notices the close.
    let mut answer = Err(String::new());
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = try_get(addr, "web.example.com", "/").await;
        if answer.is_ok() {
            break;
        }
    }
    assert_eq!(answer.unwrap().status, 200);
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn admin_serves_ready_and_istio_metrics() {
    let backend = Backend::start("ok").await;
    let s = setup(&backend, Limits::default()).await;
    let addr = s.proxy.addr("port-80").unwrap();
    still_serving(addr).await;
    assert_eq!(get(addr, "web.example.com", "/").await.status, 200);
    let admin = s.proxy.admin_addr().unwrap();
    let ready = get(admin, "admin", "/ready").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "LIVE\n"));
    let metrics = get(admin, "admin", "/stats/prometheus").await.body;
    let total = metrics.lines().find(|l| l.starts_with("istio_requests_total{")).unwrap();
    for label in [
        "reporter=\"source\"",
        "source_workload=\"istio-ingressgateway\"",
        "destination_service=\"web.shop.svc.cluster.local\"",
        "response_code=\"200\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"unknown\"",
    ] {
        assert!(total.contains(label), "{label} missing in {total}");
    }
    assert!(total.ends_with(" 2"), "{total}");
    assert!(metrics.contains("# TYPE istio_request_duration_milliseconds histogram"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_request_duration_milliseconds_bucket{") && l.contains("le=\"+Inf\"} 2"))
    );
    assert!(metrics.contains("meshlens_proxy_access_log_dropped_total 0"));
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn reload_keeps_in_flight_requests_and_rejects_a_broken_config() {
    let slow = Backend::with(Arc::new(|seen| (200, seen.path.clone())), Duration::from_millis(600)).await;
    let s = setup(&slow, Limits::default()).await;
    let addr = s.proxy.addr("port-80").unwrap();
    let in_flight = tokio::spawn(async move { get(addr, "web.example.com", "/old").await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Only /new is routed now.
    std::fs::write(&s.config, mesh(slow.addr.port(), &["/new"])).unwrap();
    let mut routed = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        routed = get(addr, "web.example.com", "/old").await.status;
        if routed == 404 {
            break;
        }
    }
    assert_eq!(routed, 404, "the new config took effect");
    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "/old"), "the request in flight finished");

    std::fs::write(
        &s.config,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web\nspec: [",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(addr, "web.example.com", "/new").await.status, 200, "the broken config was rejected");
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let backend = Backend::start("ok").await;
    let s = setup(&backend, Limits { idle_timeout: Duration::from_millis(300), ..Limits::default() }).await;
    let mut stream = TcpStream::connect(s.proxy.addr("port-80").unwrap()).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "idle connection still open: {closed:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "closed too early: {:?}", started.elapsed());
    s.proxy.shutdown().await;
}
