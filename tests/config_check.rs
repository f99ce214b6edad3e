//! `meshlens config check` through the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

fn meshlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshlens")).args(args).output().expect("run meshlens")
}

fn fixture(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path).display().to_string()
}

#[test]
fn istio_samples_load_and_every_kind_is_reported() {
    let output = meshlens(&["config", "check", "-f", &fixture("istio-samples")]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for line in ["Deployment", "DestinationRule", "Gateway", "Ingress", "Service ", "ServiceEntry", "VirtualService"] {
        assert!(stdout.contains(&format!("  {line}")), "missing {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("v1 ServiceAccount"), "{stdout}");
    assert!(stdout.contains("No errors"), "{stdout}");
}

#[test]
fn broken_document_is_located_and_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ok, namespace: shop}\nspec: {host: cart}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: shop}\nspec:\n  host: cart\n  trafficPolicy:\n    outlierDetection:\n      interval: often\n",
    )
    .unwrap();
    let output = meshlens(&["config", "check", "-f", file.to_str().unwrap()]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let expected = format!(
        "{}:13:7: document 2 (DestinationRule shop/bad): field spec.trafficPolicy.outlierDetection.interval: invalid duration \"often\"",
        file.display()
    );
    assert!(stdout.contains(&expected), "expected {expected:?} in:\n{stdout}");
    assert!(stdout.contains("DestinationRule             1"), "the good document still loads:\n{stdout}");
}

#[test]
fn json_output_and_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshlens"))
        .args(["config", "check", "-o", "json", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["counts"]["Namespace"], 1);
    assert_eq!(json["errors"], serde_json::json!([]));
}

#[test]
fn missing_file_is_an_error_not_a_crash() {
    let output = meshlens(&["config", "check", "-f", "/nonexistent/mesh.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("/nonexistent/mesh.yaml: cannot read"));
}

#[test]
fn help_lists_only_working_subcommands() {
    let output = meshlens(&["--help"]);
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("config"), "{help}");
}
