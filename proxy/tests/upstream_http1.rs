//! The HTTP/1 client side of the proxy against upstreams that answer with exactly the bytes a case gives:
//! framing (length, chunked, to the close), interim and bodiless responses, hop-by-hop headers, pooling
//! and its failures, and malformed responses. The cases are data: tests/cases/upstream_http1.json.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshlens_proxy::{AccessLogFormat, IngressOptions, start_ingress};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
struct Case {
    name: String,
    #[serde(default = "get")]
    method: String,
    pieces: Vec<String>,
    #[serde(default = "three")]
    requests: usize,
    #[serde(default)]
    pause_ms: u64,
    #[serde(default)]
    close: bool,
    close_idle_ms: Option<u64>,
    #[serde(default)]
    pad_head: usize,
    expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
struct Expect {
    status: u16,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    body_error: bool,
    connections: Option<usize>,
}

fn get() -> String {
    "GET".into()
}

fn three() -> usize {
    3
}

/// An upstream that reads each request head and answers with the case's bytes; counts its connections.
async fn scripted_upstream(case: Case) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer_each_request(stream, case.clone()));
        }
    });
    (addr, connections)
}

async fn answer_each_request(mut stream: TcpStream, case: Case) {
    let mut seen = Vec::new();
    loop {
        let idle = Duration::from_millis(case.close_idle_ms.unwrap_or(10_000));
        let mut buf = [0u8; 4096];
        let read = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        seen.extend_from_slice(&buf[..read]);
        // Requests in these cases have no body: a head ends the request.
        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        seen.drain(..end + 4);
        for (i, piece) in case.pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = stream.write_all(piece.as_bytes()).await;
            if i == 0 && case.pad_head > 0 {
                let _ = stream.write_all(format!("X-Filler: {}\r\n", "a".repeat(case.pad_head)).as_bytes()).await;
            }
        }
        if case.close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// What one request through the proxy got: status, headers and body, or the error that cut the body
/// (status 0: no response head at all).
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &str,
) -> (u16, http::HeaderMap, Result<String, String>) {
    let request =
        http::Request::builder().method(method).uri("/").header("host", "web.example.com").body(Full::default());
    let response = match sender.send_request(request.unwrap()).await {
        Ok(response) => response,
        Err(err) => return (0, http::HeaderMap::new(), Err(format!("no response head: {err}"))),
    };
    let (parts, body) = response.into_parts();
    let body = match tokio::time::timeout(Duration::from_secs(5), body.collect()).await {
        Ok(Ok(collected)) => Ok(String::from_utf8_lossy(&collected.to_bytes()).into_owned()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("body timed out".into()),
    };
    (parts.status.as_u16(), parts.headers, body)
}

async fn run(case: &Case) -> Vec<String> {
    let (upstream, connections) = scripted_upstream(case.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "mesh.yaml", &web_gateway(upstream.port()));
    let options = IngressOptions {
        common: common(vec![config], &dir.path().join("access.log"), AccessLogFormat::Json),
        listen: BTreeMap::from([(80, "127.0.0.1:0".parse().unwrap())]),
        credential_dir: None,
    };
    let proxy = start_ingress(options).await.unwrap();
    let addr = proxy.addr("port-80").unwrap();
    let mut failures = Vec::new();
    let mut downstream = None;
    for n in 0..case.requests {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(case.pause_ms)).await;
        }
        // A cut-short body ends its downstream connection; the next request opens another.
        if downstream.as_ref().is_none_or(|s: &hyper::client::conn::http1::SendRequest<_>| s.is_closed()) {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            downstream = Some(sender);
        }
        let sender = downstream.as_mut().unwrap();
        if sender.ready().await.is_err() {
            downstream = None;
            failures.push(format!("request {n}: downstream connection closed after the previous response"));
            continue;
        }
        let (status, headers, body) = exchange(sender, &case.method).await;
        let e = &case.expect;
        // A response cut short may lose its head too (hyper sends nothing of a response whose first body
        // read fails): either way the downstream never sees a complete response.
        let cut_short = e.body_error && status == 0;
        if status != e.status && !cut_short {
            failures.push(format!("request {n}: status {status}, expected {}", e.status));
        }
        match (&body, e.body_error) {
            (Ok(body), false) => {
                if e.body.as_ref().is_some_and(|expected| expected != body) {
                    failures.push(format!("request {n}: body {body:?}, expected {:?}", e.body));
                }
            }
            (Err(_), true) => downstream = None,
            (Ok(body), true) => failures.push(format!("request {n}: body {body:?} ended cleanly, expected an error")),
            (Err(err), false) => {
                downstream = None;
                failures.push(format!("request {n}: body failed: {err}"));
            }
        }
        for (name, value) in &e.headers {
            let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            if got != Some(value.as_str()) {
                failures.push(format!("request {n}: header {name} is {got:?}, expected {value:?}"));
            }
        }
        for name in &e.absent {
            if let Some(value) = headers.get(name.as_str()) {
                failures.push(format!("request {n}: header {name} forwarded ({value:?})"));
            }
        }
    }
    if let Some(expected) = case.expect.connections {
        let got = connections.load(Ordering::SeqCst);
        if got != expected {
            failures.push(format!("{got} upstream connections for {} requests, expected {expected}", case.requests));
        }
    }
    // Whatever the upstream did, the proxy still answers a new connection (with the case's status).
    let stream = TcpStream::connect(addr).await.expect("the proxy still accepts connections");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let (status, _, _) = exchange(&mut sender, &case.method).await;
    if status != case.expect.status && !(case.expect.body_error && status == 0) {
        failures.push(format!("after the case: status {status}, expected {}", case.expect.status));
    }
    proxy.shutdown().await;
    failures
}

#[tokio::test]
async fn upstream_http1_cases() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cases/upstream_http1.json");
    let cases: Cases = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.cases.len() >= 20, "the case file lost cases");
    let mut report = Vec::new();
    for case in &cases.cases {
        for failure in run(case).await {
            report.push(format!("{}: {failure}", case.name));
        }
    }
    assert!(report.is_empty(), "{} failure(s):\n{}", report.len(), report.join("\n"));
}
