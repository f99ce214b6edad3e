//! `meshlens analyze-config` through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn meshlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshlens")).args(args).output().expect("run meshlens")
}

fn fixture(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path).display().to_string()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn has_finding(report: &serde_json::Value, code: &str, resource: &str) -> bool {
    report["findings"].as_array().unwrap().iter().any(|f| f["code"] == code && f["resource"] == resource)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn json_output_reports_a_known_finding_and_fails_on_errors() {
    let file = fixture("istio-analyze/testdata/virtualservice_destinationrules.yaml");
    let output = meshlens(&["analyze-config", "-o", "json", "-f", &file]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(1), "an Error finding fails the default --fail-on error");
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["resource"] == "VirtualService default/reviews-bogussubset"
                && f["message"] == "Referenced host+subset in destinationrule not found: \"reviews+bogus\""
        })
        .unwrap_or_else(|| panic!("the missing subset of reviews-bogussubset is not reported:\n{report:#}"));
    assert_eq!(finding["code"], "IST0101");
    assert_eq!(finding["level"], "Error");
    assert!(finding["origin"].as_str().unwrap().ends_with("virtualservice_destinationrules.yaml:25"), "{finding}");
    assert!(finding["fix"].is_string());
    assert_eq!(report["load_errors"], serde_json::json!([]));
    assert_eq!(report["skipped"], 0);
}

#[test]
fn broken_document_is_located_and_the_rest_is_analyzed() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(
        dir.path(),
        "broken.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: shop}\n\
         spec:\n  host: cart\n  trafficPolicy:\n    outlierDetection:\n      interval: often\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cart, namespace: shop}\n\
         spec:\n  hosts: [cart]\n  http:\n  - route: [{destination: {host: cart}}]\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: cart, namespace: shop}\n",
    );
    let output = meshlens(&["analyze-config", "-o", "json", "-f", &broken]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(1), "a load error fails the run:\n{report:#}");
    let errors = report["load_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report:#}");
    assert_eq!(errors[0]["line"], 8);
    assert_eq!(errors[0]["field"], "spec.trafficPolicy.outlierDetection.interval");
    assert!(errors[0]["location"].as_str().unwrap().starts_with(&format!("{broken}:8:")), "{}", errors[0]);
    assert!(has_finding(&report, "ML1001", "VirtualService shop/cart"), "the good documents are analyzed:\n{report:#}");
    assert_eq!(report["skipped"], 1);

    let table = meshlens(&["analyze-config", "-f", &broken]);
    let stdout = String::from_utf8(table.stdout).unwrap();
    assert!(stdout.contains("1 documents could not be loaded and were not analyzed"), "{stdout}");
    assert!(stdout.contains(&format!("{broken}:8:")), "{stdout}");
    assert!(stdout.contains("Skipped 1 documents of kinds meshlens does not model: v1 ServiceAccount (1)"), "{stdout}");
    assert!(stdout.contains("ML1001"), "{stdout}");
}

#[test]
fn fail_on_sets_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    // Only a Warning (route without timeout) and Infos (no outlier detection / connection-pool limits).
    let warning = write(
        dir.path(),
        "warning.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cart, namespace: shop}\n\
         spec: {hosts: [cart], http: [{route: [{destination: {host: cart}}]}]}\n",
    );
    let report = json(&meshlens(&["analyze-config", "-o", "json", "-f", &warning]));
    let levels: Vec<&str> =
        report["findings"].as_array().unwrap().iter().map(|f| f["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["Warning", "Info", "Info"], "{report:#}");
    let status = |fail_on: &[&str]| {
        let mut args = vec!["analyze-config", "-f", &warning];
        args.extend_from_slice(fail_on);
        meshlens(&args).status.code()
    };
    assert_eq!(status(&[]), Some(0), "warnings do not fail the default --fail-on error");
    assert_eq!(status(&["--fail-on", "error"]), Some(0));
    assert_eq!(status(&["--fail-on", "warning"]), Some(1));
    assert_eq!(status(&["--fail-on", "info"]), Some(1));
    assert_eq!(status(&["--fail-on", "fatal"]), Some(2), "clap rejects unknown levels");
}

#[test]
fn help_lists_checks_codes_and_exit_status() {
    let output = meshlens(&["analyze-config", "--help"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    for text in ["--fail-on", "--mesh-config", "Exit status", "gateway.IngressGatewayPortAnalyzer", "IST0162", "ML1009"]
    {
        assert!(stdout.contains(text), "{text:?} missing from --help:\n{stdout}");
    }
}
