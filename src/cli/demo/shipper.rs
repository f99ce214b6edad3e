//! Ships the proxies' access logs to the collector, as Fluent Bit or Vector would tail `istio-proxy` logs:
//! each proxy appends JSON records to its own file, and the complete lines written since the last pass go
//! to `meshlens serve`'s `POST /v1/accesslogs?workload=NAMESPACE/NAME`. A batch counts as shipped only when
//! the collector answers 200, which it does once the records are durable; otherwise it is sent again on the
//! next pass.

use super::http::{Body, HttpClient, call, client};
use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Most bytes sent in one request (the collector takes up to 20 MiB).
const MAX_BATCH: u64 = 4 << 20;

/// One proxy's log file and how far it has been shipped.
#[derive(Debug)]
struct Tail {
    workload: String,
    path: PathBuf,
    shipped: u64,
}

/// What the collector made of the shipped lines.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Shipped {
    pub lines: u64,
    pub stored: u64,
    pub rejected: u64,
}

pub struct Shipper {
    collector: SocketAddr,
    client: HttpClient,
    tails: Vec<Tail>,
    pub totals: Shipped,
}

impl Shipper {
    /// `collector` is `meshlens serve`'s OTLP/HTTP listener.
    pub fn new(collector: SocketAddr) -> Shipper {
        Shipper { collector, client: client(None), tails: Vec::new(), totals: Shipped::default() }
    }

    /// Follows `path`, written by the proxy of `workload` (`NAMESPACE/NAME`).
    pub fn follow(&mut self, workload: String, path: PathBuf) {
        self.tails.push(Tail { workload, path, shipped: 0 });
    }

    /// Ships what every file gained since the last pass. Errors name the file; what failed is sent again on
    /// the next pass.
    pub async fn pass(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for index in 0..self.tails.len() {
            if let Err(error) = self.ship_one(index).await
                && first_error.is_none()
            {
                first_error = Some(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn ship_one(&mut self, index: usize) -> anyhow::Result<()> {
        loop {
            let tail = &self.tails[index];
            let Some(batch) = read_complete_lines(tail)? else { return Ok(()) };
            let lines = bytecount_lines(&batch);
            let length = batch.len() as u64;
            let uri = format!("http://{}/v1/accesslogs?workload={}", self.collector, tail.workload);
            let request = Request::builder()
                .method(Method::POST)
                .uri(uri)
                .header("content-type", "application/x-ndjson")
                .body(Body::new(Bytes::from(batch)))
                .context("building the request")?;
            let (status, body) =
                call(&self.client, request).await.with_context(|| format!("shipping {}", tail.path.display()))?;
            if status != StatusCode::OK {
                bail!("the collector answered {status} to {}: {}", tail.path.display(), String::from_utf8_lossy(&body));
            }
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let count = |key: &str| answer.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
            self.totals.lines += lines;
            self.totals.stored += count("stored");
            self.totals.rejected += count("rejected");
            if count("rejected") > 0 {
                tracing::warn!(file = %tail.path.display(), answer = %answer, "the collector rejected access-log lines");
            }
            self.tails[index].shipped += length;
        }
    }
}

/// The complete lines after what was shipped (up to [`MAX_BATCH`] bytes, whole lines), or `None`.
fn read_complete_lines(tail: &Tail) -> anyhow::Result<Option<Vec<u8>>> {
    let mut file = match std::fs::File::open(&tail.path) {
        Ok(file) => file,
        // The proxy creates its log at the first record.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", tail.path.display())),
    };
    let size = file.metadata().with_context(|| format!("reading {}", tail.path.display()))?.len();
    if size <= tail.shipped {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(tail.shipped)).with_context(|| format!("reading {}", tail.path.display()))?;
    let mut bytes = Vec::new();
    file.take((size - tail.shipped).min(MAX_BATCH))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", tail.path.display()))?;
    // A line still being written stays for the next pass.
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return Ok(None) };
    bytes.truncate(end + 1);
    Ok(Some(bytes))
}

fn bytecount_lines(batch: &[u8]) -> u64 {
    batch.iter().filter(|b| **b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_are_read_and_reading_resumes_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut tail = Tail { workload: "ns/a".to_owned(), path: path.clone(), shipped: 0 };
        assert!(read_complete_lines(&tail).unwrap().is_none(), "no file yet");
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        let batch = read_complete_lines(&tail).unwrap().unwrap();
        assert_eq!(batch, b"one\ntwo\n");
        tail.shipped += batch.len() as u64;
        assert!(read_complete_lines(&tail).unwrap().is_none(), "half a line waits");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(read_complete_lines(&tail).unwrap().unwrap(), b"three\n");
    }
}
