//! Every real-world config fixture loads without errors; unknown kinds are skipped, not errors.

use meshlens_model::mesh::{Kind, LoadReport, MeshConfig, MeshSettings};
use std::path::PathBuf;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(path)
}

#[test]
fn istio_samples_load_completely() {
    let report = LoadReport::load_paths(&[fixture("istio-samples")]);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let counts = report.counts_by_kind();
    for kind in [
        Kind::Service,
        Kind::Deployment,
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Ingress,
    ] {
        assert!(counts.get(&kind).copied().unwrap_or(0) > 0, "no {kind} loaded: {counts:?}");
    }
    let skipped = report.skipped_by_type();
    assert!(skipped.contains_key("v1 ServiceAccount"), "{skipped:?}");
}

#[test]
fn istio_analyze_testdata_loads_completely() {
    // `common/` holds the MeshConfig file, which is not a Kubernetes resource.
    let dir = fixture("istio-analyze/testdata");
    let files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    let report = LoadReport::load_paths(&files);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(report.resources.len() > 100, "only {} resources", report.resources.len());
    let settings = MeshSettings::load(&dir.join("common/meshconfig.yaml")).unwrap();
    assert!(settings.default_config.is_some());
}

#[test]
fn bookinfo_snapshot_answers_routing_questions() {
    let report = LoadReport::load_paths(&[
        fixture("istio-samples/bookinfo/platform/kube/bookinfo.yaml"),
        fixture("istio-samples/bookinfo/networking/destination-rule-all.yaml"),
        fixture("istio-samples/bookinfo/networking/virtual-service-reviews-80-20.yaml"),
    ]);
    let mesh = MeshConfig::new(report.resources);
    let reviews = "reviews.default.svc.cluster.local";
    assert!(mesh.host_exists(reviews));
    let dr = mesh.destination_rule_for(reviews, "default").expect("reviews has a DestinationRule");
    let subsets: Vec<&str> = dr.spec.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subsets, ["v1", "v2", "v3"]);
    let [vs] = mesh.virtual_services_for(reviews, "mesh")[..] else { panic!("one VirtualService for reviews") };
    let weights: Vec<Option<i32>> = vs.spec.http[0].route.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [Some(80), Some(20)]);
}
