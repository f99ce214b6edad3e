//! The access-log fixtures through both paths into the store: `POST /v1/accesslogs` on a running
//! collector and `meshlens import`, which must store the same records.

use crate::harness::{Collector, fixture, post, query, run};
use serde_json::json;

const FIXTURES: [&str; 6] = [
    "accesslogs/istio-text.log",
    "accesslogs/istio-text-legacy.log",
    "accesslogs/istio-text-truncated.log",
    "accesslogs/istio-json.log",
    "accesslogs/envoy-text.log",
    "accesslogs/meshlens-json.log",
];

fn non_blank_lines(path: &str) -> usize {
    std::fs::read_to_string(fixture(path)).unwrap().lines().filter(|l| !l.trim().is_empty()).count()
}

/// What both paths must agree on, in a stable order.
const COLUMNS: &str = "SELECT timestamp, method, path, status, response_flags, direction, reporter, mtls, \
                       destination_service, source_workload, source_format FROM requests \
                       ORDER BY timestamp, path, status, source_format";

#[test]
fn fixtures_are_stored_the_same_through_http_and_import() {
    let mut collector = Collector::start();
    let mut expected = 0;
    for path in FIXTURES {
        let body = std::fs::read(fixture(path)).unwrap();
        let response = post(collector.http, "/v1/accesslogs?workload=default/sleep", "text/plain", &body);
        assert_eq!(response.status, 200, "{path}");
        let lines = non_blank_lines(path);
        assert_eq!(response.json()["stored"], json!(lines), "{path}: {}", response.json());
        expected += lines;
    }
    collector.stop();
    let via_http = collector.query(COLUMNS);
    assert_eq!(via_http.len(), expected);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = vec!["import", "--workload", "default/sleep", "--data-dir", data.to_str().unwrap()];
    let paths: Vec<String> = FIXTURES.iter().map(|p| fixture(p).display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("read {expected} lines: {expected} stored, 0 rejected")), "{stderr}");
    assert_eq!(query(&data, COLUMNS), via_http);
}

#[test]
fn import_reports_rejected_lines_with_numbers_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let good = std::fs::read_to_string(fixture("accesslogs/istio-text.log")).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&log, format!("{first}\nnot a log line\n\n{first}\n[2025-06-01T15:37:04Z] \"GET\n")).unwrap();
    let data = dir.path().join("data");
    let out = run(&["import", "--data-dir", data.to_str().unwrap(), log.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("read 4 lines: 2 stored, 2 rejected"), "{stderr}");
    assert!(stderr.contains(&format!("{}:2: cannot detect the format", log.display())), "{stderr}");
    assert!(stderr.contains(&format!("{}:5: field 2: unterminated quoted string", log.display())), "{stderr}");
    assert_eq!(query(&data, "SELECT count(*) AS n FROM requests"), [json!({"n": 2})]);

    let out = run(&["import", "--workload", "nope", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAMESPACE/NAME"));
}
