//! Policy cases as data, one directory per case under `policies/`: `policy.yaml`, `report.json` (the
//! per-namespace mTLS counts and the findings of an analysis) and either `expected.json` (`passed` and the
//! failed rules, as `rule` or `rule:subject`) or `expected-error.txt` (the located error the policy file
//! must be rejected with).

use meshlens_analyzer::Level;
use meshlens_api::reports::model::{
    ConfigSummary, Coverage, FindingSource, LevelCounts, MtlsSection, NamespaceMtls, ReportFinding, ReportWindow,
    Summary,
};
use meshlens_api::reports::{Policy, Report};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaseReport {
    #[serde(default)]
    mtls: CaseMtls,
    #[serde(default)]
    findings: Vec<CaseFinding>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaseMtls {
    namespaces: Vec<CaseNamespace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseNamespace {
    namespace: String,
    mutual: u64,
    plaintext: u64,
    unknown: u64,
    modes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFinding {
    code: String,
    level: Level,
    resource: String,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct Expected {
    passed: bool,
    failed: Vec<String>,
}

fn report_of(case: CaseReport) -> Report {
    let namespaces: Vec<NamespaceMtls> = case
        .mtls
        .namespaces
        .into_iter()
        .map(|n| NamespaceMtls {
            namespace: n.namespace,
            observed: Coverage::new(n.mutual, n.plaintext, n.unknown),
            configured_modes: n.modes,
            classification: "compliant".into(),
            plaintext_sources: Default::default(),
        })
        .collect();
    let overall = namespaces.iter().fold(Coverage::default(), |s, n| {
        Coverage::new(s.mutual + n.observed.mutual, s.plaintext + n.observed.plaintext, s.unknown + n.observed.unknown)
    });
    let findings = case
        .findings
        .into_iter()
        .map(|f| ReportFinding {
            source: FindingSource::Traffic,
            namespace: meshlens_api::reports::model::resource_namespace(&f.resource),
            code: f.code,
            level: f.level,
            resource: f.resource,
            message: "case".into(),
            origin: None,
            fix: None,
        })
        .collect();
    let now = chrono::Utc::now();
    let mut report = Report {
        format_version: 1,
        generated_at: now,
        window: ReportWindow { start: now - chrono::TimeDelta::hours(1), end: now },
        namespace: None,
        config: ConfigSummary { hash: "sha256:0".into(), resources: Default::default(), load_errors: 0 },
        summary: Summary {
            mtls: Coverage::default(),
            findings: LevelCounts::default(),
            plaintext_edges: 0,
            resilience_gaps: 0,
            recommendations: 0,
        },
        mtls: MtlsSection { overall, namespaces },
        edges: vec![],
        plaintext_edges: vec![],
        findings,
        resilience_gaps: vec![],
        retry_amplification: vec![],
        recommendations: vec![],
        trend: None,
        policy: None,
    };
    report.summarize();
    report
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reports/policies");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).expect("policies/").map(|e| e.expect("entry").path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

fn run_case(dir: &Path) -> Result<(), String> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let case: CaseReport = serde_json::from_str(&read("report.json")?).map_err(|e| format!("report.json: {e}"))?;
    let parsed = Policy::parse("policy.yaml", &read("policy.yaml")?);
    if dir.join("expected-error.txt").exists() {
        let expected = read("expected-error.txt")?;
        return match parsed {
            Ok(policy) => Err(format!("accepted, expected the error {expected:?}: {policy:?}")),
            Err(error) if error.to_string() == expected.trim_end() => Ok(()),
            Err(error) => Err(format!("error\n  {error}\nexpected\n  {}", expected.trim_end())),
        };
    }
    let policy = parsed.map_err(|e| format!("policy rejected: {e}"))?;
    let expected: Expected =
        serde_json::from_str(&read("expected.json")?).map_err(|e| format!("expected.json: {e}"))?;
    let verdict = policy.evaluate(&report_of(case));
    let failed: Vec<String> = verdict
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| match &c.subject {
            Some(subject) => format!("{}:{subject}", c.rule),
            None => c.rule.clone(),
        })
        .collect();
    let actual = Expected { passed: verdict.passed, failed };
    if actual == expected {
        Ok(())
    } else {
        Err(format!("verdict {actual:?}, expected {expected:?}; checks {:#?}", verdict.checks))
    }
}

#[test]
fn policy_cases() {
    let dirs = cases();
    assert!(dirs.len() >= 10, "policy cases missing: {dirs:?}");
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|dir| {
            run_case(dir).err().map(|e| format!("{}: {e}", dir.file_name().unwrap_or_default().to_string_lossy()))
        })
        .collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), dirs.len(), failures.join("\n\n"));
}

#[test]
fn policies_in_requests_are_objects_or_yaml_text() {
    let object = serde_json::json!({"mtls_min_percent": 99.9, "max_findings": {"error": 0}});
    let policy = Policy::from_json(&object).expect("object");
    assert_eq!(policy.mtls_min_percent.map(|p| p.value()), Some(99.9));
    let text = serde_json::json!("mtls_min_percent: 99.9\nmax_findings: {error: 0}\n");
    assert_eq!(Policy::from_json(&text).expect("YAML text"), policy);
    let typo = serde_json::json!({"max_findings": {"errors": 0}});
    let error = Policy::from_json(&typo).expect_err("unknown field");
    assert_eq!(error.field.as_deref(), Some("max_findings.errors"));
    assert!(error.to_string().contains("unknown field `errors`"), "{error}");
}
