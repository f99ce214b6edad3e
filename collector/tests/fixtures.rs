//! Every `tests/fixtures/accesslogs/NAME.log` line, parsed with auto-detection, must produce the fields on the
//! same line of `NAME.expected.jsonl` (tests/fixtures/README.md): listed keys must match, a `null` key must be
//! absent, unlisted keys are not checked. New pairs are picked up without code changes.

use chrono::{DateTime, Utc};
use meshlens_collector::{LineFormat, parse_line};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/accesslogs")
}

fn log_files() -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("read tests/fixtures/accesslogs")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    logs
}

/// Timestamps are compared as instants, so `.857Z` and `.857+00:00` agree.
fn same_value(key: &str, expected: &Value, actual: &Value) -> bool {
    let instant = |v: &Value| v.as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok());
    if key == "timestamp" {
        instant(expected).is_some() && instant(expected) == instant(actual)
    } else {
        expected == actual
    }
}

/// The mismatches between one parsed line and its expectation.
fn compare(expected: &Map<String, Value>, actual: &Map<String, Value>) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(key, want)| match actual.get(key) {
            // Every record field is serialized, so a key the record lacks is a typo in the fixture.
            None => Some(format!("{key}: not a field of the record")),
            Some(got) if !same_value(key, want, got) => Some(format!("{key}: expected {want}, got {got}")),
            Some(_) => None,
        })
        .collect()
}

fn check_pair(log: &Path) -> Vec<String> {
    let expected_path = log.with_extension("expected.jsonl");
    let lines = std::fs::read_to_string(log).unwrap();
    let expected =
        std::fs::read_to_string(&expected_path).unwrap_or_else(|err| panic!("{}: {err}", expected_path.display()));
    let (lines, expected): (Vec<&str>, Vec<&str>) = (lines.lines().collect(), expected.lines().collect());
    let name = log.file_name().unwrap().to_string_lossy();
    if lines.len() != expected.len() {
        return vec![format!("{name}: {} lines but {} expectations", lines.len(), expected.len())];
    }
    let mut failures = Vec::new();
    for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
        let want: Map<String, Value> =
            serde_json::from_str(want).unwrap_or_else(|err| panic!("{name}:{}: {err}", i + 1));
        match parse_line(line, LineFormat::Auto) {
            Ok(record) => {
                let got = serde_json::to_value(&record).unwrap();
                failures.extend(
                    compare(&want, got.as_object().unwrap()).into_iter().map(|m| format!("{name}:{}: {m}", i + 1)),
                );
            }
            Err(err) => failures.push(format!("{name}:{}: {err}", i + 1)),
        }
    }
    failures
}

#[test]
fn every_fixture_line_produces_its_expected_fields() {
    let logs = log_files();
    assert!(logs.iter().any(|p| p.ends_with("istio-text.log")), "fixtures missing from {}", fixture_dir().display());
    let failures: Vec<String> = logs.iter().flat_map(|log| check_pair(log)).collect();
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
