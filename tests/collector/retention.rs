//! `serve --retention`: old hour partitions are dropped while the collector runs, recent data stays, and
//! a SIGTERM leaves everything flushed to Parquet.

use crate::harness::{Collector, fixture, post, query, run};
use serde_json::json;
use std::time::{Duration, Instant};

fn count(data: &std::path::Path, filter: &str) -> u64 {
    let rows = query(data, &format!("SELECT count(*) AS n FROM requests WHERE {filter}"));
    rows[0]["n"].as_u64().unwrap()
}

#[test]
fn serve_retention_drops_old_partitions_and_keeps_recent_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let old_log = fixture("accesslogs/istio-text.log");
    let out = run(&[
        "import",
        "--workload",
        "default/sleep",
        "--data-dir",
        data.to_str().unwrap(),
        old_log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let old = count(&data, "true");
    assert!(old > 0);

    let mut collector = Collector::start_in(dir, &["--retention", "24h"]);
    // One record of now, next to the fixture's records of 2019-2025.
    let template = std::fs::read_to_string(&old_log).unwrap();
    let line = template.lines().nth(1).unwrap();
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let recent = format!("[{stamp}]{}", &line[line.find(']').unwrap() + 1..]);
    let response = post(collector.http, "/v1/accesslogs?workload=default/sleep", "text/plain", recent.as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["stored"], json!(1));

    // Retention runs at start; the read-only query sees its result once the catalog rows are gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&data, "timestamp < now() - INTERVAL '1 day'") > 0 {
        assert!(Instant::now() < deadline, "old partitions still queryable after 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    collector.stop();

    assert_eq!(count(&data, "true"), 1, "only the recent record is left");
    assert_eq!(count(&data, "timestamp > now() - INTERVAL '1 day'"), 1);
    // The old partitions' files are deleted, and the clean stop flushed the recent record to Parquet
    // (a stop that skipped the flush would leave it in the WAL only, for the next start to replay).
    let parquet_files = walk(&data.join("parquet")).into_iter().filter(|p| p.extension() == Some("parquet".as_ref()));
    assert_eq!(parquet_files.count(), 1);
}

#[test]
fn serve_refuses_a_retention_shorter_than_an_hour() {
    let out = run(&["serve", "--retention", "10m"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--retention") && stderr.contains("less than 1h"), "{stderr}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
