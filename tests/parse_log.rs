//! `meshlens parse-log` through the real binary.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn meshlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshlens")).args(args).output().expect("run meshlens")
}

fn fixture(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/accesslogs").join(path).display().to_string()
}

fn records(stdout: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn fixture_file_becomes_one_record_per_line() {
    let output = meshlens(&["parse-log", &fixture("istio-text.log")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let records = records(&output.stdout);
    let expected = std::fs::read_to_string(fixture("istio-text.expected.jsonl")).unwrap();
    assert_eq!(records.len(), expected.lines().count());
    for (record, expected) in records.iter().zip(expected.lines()) {
        let expected: serde_json::Value = serde_json::from_str(expected).unwrap();
        for key in ["request_id", "status", "direction", "mtls", "destination_service"] {
            assert_eq!(record[key], expected[key], "{key} in {record}");
        }
        assert_eq!(record["source_format"], "istio_text");
        let all_fields = serde_json::to_value(meshlens_model::RequestRecord::default()).unwrap();
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(record), keys(&all_fields), "every record field is written, null when absent");
    }
}

#[test]
fn bad_lines_are_reported_with_their_number_and_the_rest_still_parse() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.log");
    let good = std::fs::read_to_string(fixture("istio-text.log")).unwrap();
    let good: Vec<&str> = good.lines().take(2).collect();
    let mut content = format!("{}\n\n", good[0]).into_bytes();
    content
        .extend_from_slice(b"[2025-06-01T15:37:04.857Z] \"GET /get HTTP/1.1\" 200 - via_upstream - \"-\" 0 81 abc\n");
    content.extend_from_slice(b"\xff\xfe garbage\r\n");
    content.extend_from_slice(format!("{}\r\n", good[1]).as_bytes());
    std::fs::write(&file, content).unwrap();
    let path = file.to_str().unwrap();

    let output = meshlens(&["parse-log", "--format", "istio-text", path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "error: {path}:3: field 10 (duration): expected an integer, found \"abc\"\n\
             error: {path}:4: line is not valid UTF-8 (invalid byte at offset 0)\n"
        )
    );
    let ids: Vec<String> =
        records(&output.stdout).iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["d4e65b2b-3a80-9caa-a6ca-df79908d4d7e", "f47fa353-177d-9834-ac08-5c5be28f4593"]);
}

#[test]
fn reads_stdin_and_applies_format_and_reporter() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshlens"))
        .args(["parse-log", "--format", "istio-json", "--reporter", "gateway", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = r#"{"start_time":"2024-03-18T10:11:15.500Z","response_code":"200","upstream_cluster":"outbound|9080||productpage.default.svc.cluster.local"}"#;
    child.stdin.take().unwrap().write_all(format!("{line}\nnot json\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: <stdin>:2: invalid JSON: "), "{stderr}");
    let records = records(&output.stdout);
    assert_eq!(records.len(), 1);
    assert_eq!((&records[0]["reporter"], &records[0]["status"]), (&"gateway".into(), &200.into()));
    assert_eq!(records[0]["source_format"], "istio_json");
}

#[test]
fn missing_file_is_an_error_and_help_explains_exit_codes() {
    let output = meshlens(&["parse-log", "/nonexistent/access.log"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("opening /nonexistent/access.log"));
    let help = meshlens(&["parse-log", "--help"]);
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("1 when some lines failed") && help.contains("istio-text"), "{help}");
}
