//! istioctl's own analyzer test grid (`tests/fixtures/istio-analyze/cases.json`), run through meshlens.
//!
//! Each case names the istioctl analyzer it exercises; meshlens runs the check of the same name (other
//! checks legitimately report other problems in the same files, which the grid does not list). A case
//! passes when the findings restricted to the case's codes and resource kinds equal `expected` as a
//! multiset of (code, level, resource).

use meshlens_analyzer::config::ConfigAnalyzer;
use meshlens_model::mesh::{LoadReport, MeshSettings};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    check: String,
    input_files: Vec<String>,
    mesh_config_file: Option<String>,
    expected: Vec<Expected>,
    codes: Vec<String>,
    kinds: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    code: String,
    level: String,
    resource: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/istio-analyze")
}

/// Runs one case; `Err` holds a readable diff.
fn run(case: &Case) -> Result<(), String> {
    let dir = fixtures();
    let report = LoadReport::load_paths(&case.input_files.iter().map(|f| dir.join(f)).collect::<Vec<_>>());
    if !report.errors.is_empty() {
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        return Err(format!("load errors:\n  {}", errors.join("\n  ")));
    }
    let settings = match &case.mesh_config_file {
        Some(file) => MeshSettings::load(&dir.join(file)).map_err(|e| format!("mesh config: {e}"))?,
        None => MeshSettings::default(),
    };
    let analyzer = ConfigAnalyzer::new(settings).with_checks(&[&case.check]).map_err(|e| e.to_string())?;
    let findings: Vec<_> = analyzer
        .analyze(&report)
        .into_iter()
        .filter(|f| case.codes.contains(&f.code))
        .filter(|f| case.kinds.iter().any(|k| f.resource.split_once(' ').is_some_and(|(kind, _)| kind == k)))
        .collect();
    let mut actual: Vec<Expected> = findings
        .iter()
        .map(|f| Expected { code: f.code.clone(), level: f.level.to_string(), resource: f.resource.clone() })
        .collect();
    let mut expected = case.expected.clone();
    actual.sort();
    expected.sort();
    if actual == expected {
        return Ok(());
    }
    let mut missing = expected.clone();
    let mut unexpected = Vec::new();
    for found in &actual {
        match missing.iter().position(|m| m == found) {
            Some(i) => {
                missing.remove(i);
            }
            None => unexpected.push(found.clone()),
        }
    }
    let mut diff = String::new();
    for m in &missing {
        diff.push_str(&format!("  - missing    {} {} {}\n", m.code, m.level, m.resource));
    }
    for u in &unexpected {
        let message =
            findings.iter().find(|f| f.code == u.code && f.resource == u.resource).map_or("", |f| f.message.as_str());
        diff.push_str(&format!("  + unexpected {} {} {}: {message}\n", u.code, u.level, u.resource));
    }
    Err(diff)
}

#[test]
fn every_istioctl_case_passes() {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    let cases: Vec<Case> = serde_json::from_str(&text).expect("cases.json parses");
    assert_eq!(cases.len(), 31, "the grid has 31 cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| run(case).err().map(|diff| format!("{} [{}]:\n{diff}", case.name, case.check)))
        .collect();
    assert!(failures.is_empty(), "{} of {} cases fail:\n\n{}", failures.len(), cases.len(), failures.join("\n"));
}
