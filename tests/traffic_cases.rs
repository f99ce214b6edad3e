//! Traffic-analysis behaviour cases, one directory per case under `tests/cases/<name>/`: `config.yaml`, one
//! or more access logs named `<namespace>__<workload>.log` after the workload whose proxy wrote them, and
//! `expected.json`. Each case runs the real binary (`meshlens analyze -f config.yaml --logs *.log -o json`
//! in the case directory) and compares the findings and key figures of its output with `expected.json`.
//!
//! After an intended change, regenerate the expectations with `MESHLENS_BLESS=1 cargo test --test
//! traffic_cases` and review the diff: the expected files are the specification, not a snapshot.

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn case_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/cases")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn run(dir: &Path) -> Result<Value, String> {
    let mut logs: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".log"))
        .collect();
    logs.sort();
    let output = Command::new(env!("CARGO_BIN_EXE_meshlens"))
        .current_dir(dir)
        .args(["analyze", "-f", "config.yaml", "-o", "json", "--logs"])
        .args(&logs)
        .output()
        .map_err(|e| format!("running meshlens: {e}"))?;
    // 0 or 1 (findings or skipped input); 2 means the analysis did not run.
    if !matches!(output.status.code(), Some(0 | 1)) {
        return Err(format!("meshlens failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("output is not JSON: {e}"))
}

/// Keeps the listed fields of an object, in the given order.
fn pick(value: &Value, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for field in fields {
        if let Some(v) = value.get(*field) {
            out.insert((*field).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn each(value: &Value, f: impl Fn(&Value) -> Option<Value>) -> Value {
    Value::Array(value.as_array().into_iter().flatten().filter_map(f).collect())
}

/// Drops zero counts, so that expectations list the failures that happened.
fn non_zero(value: &Value) -> Value {
    let map = value.as_object().cloned().unwrap_or_default();
    Value::Object(map.into_iter().filter(|(_, v)| v.as_u64() != Some(0)).collect())
}

/// The findings and key figures of a report: what a case pins down. Full texts that the analyzer's own
/// tests cover (fix hints, YAML patches) are left out.
fn key_figures(report: &Value) -> Value {
    let routes = &report["routes"];
    json!({
        "window": report["window"],
        "findings": each(&report["findings"], |f| Some(pick(f, &["code", "level", "resource", "message", "origin"]))),
        "mtls": {
            "overall": report["mtls"]["overall"],
            "namespaces": each(&report["mtls"]["namespaces"], |n| Some(pick(n, &[
                "namespace", "requests", "mutual", "plaintext", "unknown", "modes", "classification", "plaintext_sources",
            ]))),
            "edges": each(&report["mtls"]["edges"], |e| Some(pick(e, &[
                "source", "destination", "requests", "mutual", "plaintext", "unknown", "resolved_by_pairing",
                "configured", "classification",
            ]))),
        },
        "routes": {
            "used": each(&routes["routes"], |r| {
                (r["requests"].as_u64() != Some(0)).then(|| {
                    let mut used = pick(r, &["route", "requests", "matched_by_name", "errors", "methods"]);
                    used["latency"] = pick(&r["latency"], &["p50_ms", "p95_ms", "p99_ms"]);
                    if !r["split"].is_null() {
                        used["split"] = r["split"].clone();
                    }
                    used
                })
            }),
            "unused": routes["unused"],
            "no_route": routes["no_route"],
            "unmatched": routes["unmatched"],
            "default_route_requests": routes["default_route_requests"],
        },
        "resilience": {
            "services": each(&report["resilience"]["services"], |s| {
                let mut service = pick(s, &["service", "requests", "retries", "retry_rate", "gaps"]);
                service["failures"] = non_zero(&s["failures"]);
                service["bursts"] = non_zero(&s["bursts"]);
                service["p99.9_ms"] = s["latency"]["p999_ms"].clone();
                Some(service)
            }),
            "amplification": report["resilience"]["amplification"],
        },
        "recommendations": each(&report["recommendations"], |r| {
            Some(pick(r, &["kind", "target", "value", "formula", "confidence", "note", "resource"]))
        }),
        "skipped": report["skipped"],
    })
}

/// Line diff of expected against actual JSON.
fn diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for line in expected.iter().filter(|l| !actual.contains(l)) {
        out.push_str(&format!("  - {line}\n"));
    }
    for line in actual.iter().filter(|l| !expected.contains(l)) {
        out.push_str(&format!("  + {line}\n"));
    }
    if out.is_empty() {
        out.push_str("  (same lines, different order)\n");
    }
    out
}

#[test]
fn traffic_cases_match_expected_figures() {
    let bless = std::env::var_os("MESHLENS_BLESS").is_some_and(|v| v == "1");
    let dirs = case_dirs();
    assert!(!dirs.is_empty(), "no cases under tests/cases");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let report = match run(dir) {
            Ok(report) => report,
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        let actual = serde_json::to_string_pretty(&key_figures(&report)).expect("serialize") + "\n";
        let expected_path = dir.join("expected.json");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expected.json");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => {
                failures.push(format!("{name}: output differs (- expected, + actual):\n{}", diff(&expected, &actual)))
            }
            Err(e) => failures.push(format!("{name}: expected.json: {e} (run with MESHLENS_BLESS=1 to create it)")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases fail:\n\n{}", failures.len(), dirs.len(), failures.join("\n"));
}

#[test]
fn every_recommendation_patch_loads_as_mesh_configuration() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/retry-on-post");
    let report = run(&dir).expect("retry-on-post runs");
    let patches: Vec<&str> = report["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .filter_map(|r| r["patch"].as_str())
        .collect();
    assert!(!patches.is_empty());
    for patch in patches {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), patch).expect("write patch");
        let output = Command::new(env!("CARGO_BIN_EXE_meshlens"))
            .args(["config", "check", "-o", "json", "-f"])
            .arg(file.path())
            .output()
            .expect("run meshlens config check");
        assert!(output.status.success(), "patch does not load:\n{patch}\n{}", String::from_utf8_lossy(&output.stdout));
    }
}

#[test]
fn the_store_gives_the_same_analysis_as_the_log_files() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/timeout-recommendation");
    let data = tempfile::tempdir().expect("temp dir");
    let meshlens = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_meshlens")).current_dir(&case).args(args).output().expect("run meshlens")
    };
    for (workload, file) in [("shop/frontend-0", "shop__frontend-0.log"), ("shop/pricing-0", "shop__pricing-0.log")] {
        let data_dir = data.path().to_str().expect("utf-8 path");
        let output = meshlens(&["import", "--data-dir", data_dir, "-f", "config.yaml", "--workload", workload, file]);
        assert!(output.status.success(), "import {file}: {}", String::from_utf8_lossy(&output.stderr));
    }
    // The logs are from 2025; a window reaching back far enough from now covers them.
    let output = meshlens(&[
        "analyze",
        "-f",
        "config.yaml",
        "-o",
        "json",
        "--window",
        "1000000h",
        "--data-dir",
        data.path().to_str().expect("utf-8 path"),
    ]);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{}", String::from_utf8_lossy(&output.stderr));
    let from_store: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let from_logs = run(&case).expect("--logs run");
    for section in ["findings", "mtls", "recommendations"] {
        assert_eq!(from_store[section], from_logs[section], "{section} differs between the store and --logs");
    }
    assert_eq!(from_store["routes"]["routes"], from_logs["routes"]["routes"]);
}
