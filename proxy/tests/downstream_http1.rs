//! The HTTP/1 server side of the proxy against clients that write exactly the bytes a case gives: heads
//! and bodies split across reads, pipelining, keep-alive and close rules of HTTP/1.0 and 1.1, chunked
//! request bodies, `Expect: 100-continue`, HEAD, limits and malformed input. The cases are data:
//! tests/cases/downstream_http1.json.

mod common;

use common::*;
use meshlens_proxy::{AccessLogFormat, IngressOptions, Limits, Running, start_ingress};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    pieces: Vec<String>,
    #[serde(default)]
    pause_ms: u64,
    #[serde(default)]
    limits: CaseLimits,
    expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseLimits {
    max_header_bytes: Option<usize>,
    max_request_body: Option<usize>,
    idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    responses: Vec<ExpectedResponse>,
    /// Whether the connection still serves a request after the case's bytes.
    open: bool,
    /// Wait before the probe request (for idle timeouts).
    #[serde(default)]
    probe_after_ms: u64,
    /// What the backend saw, in order: `METHOD PATH body=BODY`.
    backend: Vec<String>,
    /// Headers every request the backend saw must carry (`name: value`).
    #[serde(default)]
    backend_headers: BTreeMap<String, String>,
    /// Headers no request the backend saw may carry.
    #[serde(default)]
    backend_absent: Vec<String>,
    /// The access-log record of a request the server rejected: status, response flag, details.
    rejected_log: Option<(u16, String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedResponse {
    status: u16,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent: Vec<String>,
}

/// A response as read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Splits what the proxy sent into responses (interim ones included), framing bodies by the rules of
/// RFC 9112: no body for 1xx/204/304 and answers to HEAD, else content-length, chunked, or to the close.
fn parse_responses(mut bytes: &[u8], methods: &[String]) -> Vec<Wire> {
    let mut responses = Vec::new();
    let mut methods = methods.iter();
    let mut method = methods.next();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = parsed.parse(bytes) else {
            panic!("not a response head: {:?}", String::from_utf8_lossy(bytes));
        };
        let status = parsed.code.unwrap();
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        bytes = &bytes[head..];
        let mut wire = Wire { status, headers, body: Vec::new() };
        let interim = (100..200).contains(&status);
        let bodiless = interim || status == 204 || status == 304 || method.is_some_and(|m| m == "HEAD");
        if !bodiless {
            if wire.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
                loop {
                    let line_end = bytes.windows(2).position(|w| w == b"\r\n").expect("chunk-size line");
                    let size = usize::from_str_radix(std::str::from_utf8(&bytes[..line_end]).unwrap(), 16).unwrap();
                    bytes = &bytes[line_end + 2..];
                    if size == 0 {
                        assert!(bytes.starts_with(b"\r\n"), "no trailers expected");
                        bytes = &bytes[2..];
                        break;
                    }
                    wire.body.extend_from_slice(&bytes[..size]);
                    bytes = &bytes[size + 2..];
                }
            } else if let Some(length) = wire.header("content-length") {
                let length: usize = length.parse().unwrap();
                wire.body.extend_from_slice(&bytes[..length]);
                bytes = &bytes[length..];
            } else {
                wire.body.extend_from_slice(bytes);
                bytes = &[];
            }
        }
        if !interim {
            method = methods.next();
        }
        responses.push(wire);
    }
    responses
}

/// The methods of the requests in `bytes`, in order (to know which answers have no body).
fn request_methods(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"];
    text.split("\r\n")
        .filter_map(|line| {
            let method = line.split(' ').next()?;
            (methods.contains(&method) && line.contains(" HTTP/1.")).then(|| method.to_owned())
        })
        .collect()
}

const PROBE: &str = "GET /probe HTTP/1.1\r\nHost: web.example.com\r\n\r\n";

/// An ingress in front of `backend` with `limits`, listening on a port of its own.
async fn ingress(backend: &Backend, limits: Limits) -> (Running, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "mesh.yaml", &web_gateway(backend.addr.port()));
    let mut common = common(vec![config], &dir.path().join("access.log"), AccessLogFormat::Json);
    common.limits = limits;
    let options =
        IngressOptions { common, listen: BTreeMap::from([(80, "127.0.0.1:0".parse().unwrap())]), credential_dir: None };
    let proxy = start_ingress(options).await.unwrap();
    let addr = proxy.addr("port-80").unwrap();
    (proxy, addr, dir)
}

/// Writes the pieces (pausing between them), then the probe, then half-closes; returns all the proxy sent
/// until it closed.
async fn exchange(addr: SocketAddr, case: &Case) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (out, false),
            }
        }
    });
    for (i, piece) in case.pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(case.pause_ms)).await;
        }
        if writer.write_all(piece.as_bytes()).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(case.expect.probe_after_ms.max(50))).await;
    let _ = writer.write_all(PROBE.as_bytes()).await;
    let _ = writer.shutdown().await;
    let (out, closed) = collect.await.unwrap();
    assert!(closed, "{}: the proxy did not close the connection after the client did", case.name);
    out
}

async fn run(case: &Case) {
    let name = &case.name;
    let echo: Handler = Arc::new(|seen: &Seen| {
        (200, format!("{} {} body={}", seen.method, seen.path, String::from_utf8_lossy(&seen.body)))
    });
    let backend = Backend::with(echo, Duration::ZERO).await;
    let defaults = Limits::default();
    let limits = Limits {
        max_header_bytes: case.limits.max_header_bytes.unwrap_or(defaults.max_header_bytes),
        max_request_body: case.limits.max_request_body.unwrap_or(defaults.max_request_body),
        idle_timeout: case.limits.idle_timeout_ms.map_or(defaults.idle_timeout, Duration::from_millis),
        ..defaults
    };
    let (proxy, addr, dir) = ingress(&backend, limits).await;

    let sent = exchange(addr, case).await;
    let mut all_requests: Vec<u8> = case.pieces.concat().into_bytes();
    all_requests.extend_from_slice(PROBE.as_bytes());
    let responses = parse_responses(&sent, &request_methods(&all_requests));
    let mut expected: Vec<&ExpectedResponse> = case.expect.responses.iter().collect();
    let probe = ExpectedResponse {
        status: 200,
        body: Some("GET /probe body=".into()),
        headers: BTreeMap::new(),
        absent: Vec::new(),
    };
    if case.expect.open {
        expected.push(&probe);
    }
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        expected.iter().map(|e| e.status).collect::<Vec<_>>(),
        "{name}: statuses of the responses (the last is the probe when the connection stays open); got {:?}",
        String::from_utf8_lossy(&sent)
    );
    for (i, (got, want)) in responses.iter().zip(&expected).enumerate() {
        if let Some(body) = &want.body {
            assert_eq!(String::from_utf8_lossy(&got.body), *body, "{name}: body of response {i}");
        }
        for (header, value) in &want.headers {
            let actual = got.header(header);
            assert!(
                actual.is_some_and(|v| value == "*" || v.eq_ignore_ascii_case(value)),
                "{name}: response {i} header {header}: {actual:?}, want {value}"
            );
        }
        for header in &want.absent {
            assert_eq!(got.header(header), None, "{name}: response {i} must not have {header}");
        }
        assert!(got.header("date").is_some() || got.status < 200, "{name}: response {i} has a date");
    }

    let mut backend_saw: Vec<String> = backend
        .requests()
        .iter()
        .map(|seen| format!("{} {} body={}", seen.method, seen.path, String::from_utf8_lossy(&seen.body)))
        .collect();
    if case.expect.open {
        assert_eq!(backend_saw.pop().as_deref(), Some("GET /probe body="), "{name}: the probe reached the backend");
    }
    assert_eq!(backend_saw, case.expect.backend, "{name}: what the backend saw");
    for seen in backend.requests().iter().filter(|seen| seen.path != "/probe") {
        for (header, value) in &case.expect.backend_headers {
            let actual = seen.headers.get(header.as_str()).and_then(|v| v.to_str().ok());
            assert_eq!(actual, Some(value.as_str()), "{name}: backend header {header}");
        }
        for header in &case.expect.backend_absent {
            assert!(!seen.headers.contains_key(header.as_str()), "{name}: the backend must not see {header}");
        }
    }
    assert_eq!(get(addr, "web.example.com", "/after").await.status, 200, "{name}: the proxy keeps serving");
    if let Some((status, flag, details)) = &case.expect.rejected_log {
        let log = dir.path().join("access.log");
        let logged = |record: &meshlens_model::RequestRecord| {
            record.status == Some(*status)
                && record.response_flags == [flag.clone()]
                && record.response_code_details.as_deref() == Some(details.as_str())
                && record.method.is_none()
        };
        let mut found = false;
        for _ in 0..100 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if json_records(&lines).iter().any(logged) {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(found, "{name}: no access-log record of the rejection in {:?}", std::fs::read_to_string(&log));
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn downstream_http1_cases() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cases/downstream_http1.json")).unwrap();
    let cases: Cases = serde_json::from_str(&text).unwrap();
    assert!(cases.cases.len() >= 20);
    for case in &cases.cases {
        run(case).await;
    }
}

/// A client that keeps requests pipelined (the next ones already in the proxy's buffer) must still see its
/// connection closed soon after the proxy shuts down, not be served for as long as it keeps sending.
#[tokio::test]
async fn shutdown_closes_a_connection_with_pipelined_requests_after_the_request_in_flight() {
    let backend = Backend::start("ok").await;
    let (proxy, addr, _dir) = ingress(&backend, Limits::default()).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let burst = PROBE.repeat(8);
    let sender = tokio::spawn(async move {
        while writer.write_all(burst.as_bytes()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0;
    while received < 64 * 1024 {
        received += reader.read(&mut buf).await.unwrap();
    }
    let shutdown = tokio::time::timeout(Duration::from_secs(5), proxy.shutdown());
    assert!(shutdown.await.is_ok(), "the proxy shut down");
    let mut last = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => last = buf[..n].to_vec(),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed after the shutdown while requests kept coming");
    let last = String::from_utf8_lossy(&last);
    assert!(last.contains("connection: close"), "the last response says the connection closes: {last:?}");
    sender.abort();
}
