//! A running `meshlens serve` and the small clients the tests need.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_meshlens");

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// `meshlens serve` on free ports with its own data directory; killed on drop if not stopped.
pub struct Collector {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Collector {
    pub fn start() -> Collector {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Collector {
        Self::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// Starts on the store in `dir/data`, which may already hold data.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Collector {
        let mut child = Command::new(BIN)
            .args(["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
            .args(["--api-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "meshlens serve exited before listening");
            if line.starts_with("meshlens listening ") {
                break;
            }
        }
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let addr = |key: &str| -> SocketAddr {
            let field = line.split_whitespace().find_map(|f| f.strip_prefix(key)).unwrap();
            field.parse().unwrap_or_else(|_| panic!("{key}{field} in {line:?}"))
        };
        Collector { grpc: addr("otlp_grpc="), http: addr("otlp_http="), api: addr("api="), child, dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// SIGTERM, then waits for a clean exit (the store is flushed and closed).
    pub fn stop(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "meshlens serve exited with {exit}");
    }

    /// Rows of a `meshlens query` over this collector's store, as JSON objects.
    pub fn query(&self, sql: &str) -> Vec<serde_json::Value> {
        query(&self.data_dir(), sql)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // Already exited after `stop`; then there is nothing to kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn query(data_dir: &Path, sql: &str) -> Vec<serde_json::Value> {
    let out = run(&["query", "-o", "json", "--data-dir", data_dir.to_str().unwrap(), sql]);
    assert!(out.status.success(), "query failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A minimal HTTP/1.1 client (`Connection: close`, `Content-Length` bodies), enough for these tests and
/// free of a client library's own body handling.
pub fn http(method: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    Response { status, headers, body: raw[split + 4..].to_vec() }
}

pub fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Response {
    http("POST", addr, path, &[("Content-Type", content_type)], body)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An Istio text access-log line as a sidecar's inbound listener logs it.
pub const INBOUND_LINE: &str = r#"[2025-06-01T15:37:04.814Z] "GET /get HTTP/1.1" 200 - via_upstream - "-" 0 621 94 63 "-" "fortio" "f47fa353" "httpbin:8000" "10.244.1.27:8080" inbound|8080|| 127.0.0.6:42658 10.244.1.27:8080 10.244.2.30:58932 outbound_.8000_._.httpbin.default.svc.cluster.local default"#;
