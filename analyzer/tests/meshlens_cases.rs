//! meshlens' own checks, one directory per case under `tests/cases/<name>/`: `config.yaml` is analyzed and
//! its `ML` findings must equal `expected.json` exactly (code, level, resource, message, origin, fix).
//!
//! After an intended change, regenerate the expectations with `MESHLENS_BLESS=1 cargo test -p
//! meshlens-analyzer --test meshlens_cases` and review the diff.

use meshlens_analyzer::Finding;
use meshlens_analyzer::config::ConfigAnalyzer;
use meshlens_model::mesh::{LoadReport, MeshSettings};
use std::path::{Path, PathBuf};

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

/// The `ML` findings for a case's `config.yaml`, named by its file name so that origins are stable.
fn analyze(dir: &Path) -> Result<Vec<Finding>, String> {
    let text = std::fs::read_to_string(dir.join("config.yaml")).map_err(|e| format!("config.yaml: {e}"))?;
    let mut report = LoadReport::default();
    report.parse_str("config.yaml", &text);
    if let Some(error) = report.errors.first() {
        return Err(format!("config.yaml does not load: {error}"));
    }
    let findings = ConfigAnalyzer::new(MeshSettings::default()).analyze(&report);
    Ok(findings.into_iter().filter(|f| f.code.starts_with("ML")).collect())
}

fn to_json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(findings).expect("findings serialize") + "\n"
}

/// Line diff of expected against actual JSON (both are short).
fn diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for line in &expected {
        if !actual.contains(line) {
            out.push_str(&format!("  - {line}\n"));
        }
    }
    for line in &actual {
        if !expected.contains(line) {
            out.push_str(&format!("  + {line}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("  (same lines, different order)\n");
    }
    out
}

#[test]
fn meshlens_checks_match_expected_findings() {
    let bless = std::env::var_os("MESHLENS_BLESS").is_some_and(|v| v == "1");
    let dirs = case_dirs();
    assert!(!dirs.is_empty(), "no cases under tests/cases");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let actual = match analyze(dir) {
            Ok(findings) => to_json(&findings),
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        let expected_path = dir.join("expected.json");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expected.json");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => {
                failures.push(format!("{name}: findings differ (- expected, + actual):\n{}", diff(&expected, &actual)))
            }
            Err(e) => failures.push(format!("{name}: expected.json: {e} (run with MESHLENS_BLESS=1 to create it)")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases fail:\n\n{}", failures.len(), dirs.len(), failures.join("\n"));
}
