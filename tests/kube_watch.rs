//! `meshlens serve --kube` against a fake Kubernetes API server (tests/kube/fake_api.rs) that speaks the
//! list and watch protocol over real HTTP, serving Istio's Bookinfo sample objects. kube's client and
//! kube-runtime's reflectors really talk to it, through a kubeconfig file. Checked: the initial list,
//! then ADDED/MODIFIED/DELETED events, bookmarks and a `410 Gone` relist each reach the snapshot, the
//! config history and the analyzer's findings; Istio's groups missing are reported and skipped; an
//! unreachable API server fails start-up with a clear message, or is retried with `--kube-optional`.

#[path = "kube/fake_api.rs"]
mod fake_api;
#[path = "collector/harness.rs"]
#[allow(dead_code)]
mod harness;

use fake_api::FakeApi;
use harness::{BIN, Collector, fixture, http};
use meshlens_analyzer::config::ConfigAnalyzer;
use meshlens_collector::kube::{ClusterSnapshot, ClusterWatch, KubeTarget, WatchOptions, connect};
use meshlens_model::mesh::MeshSettings;
use meshlens_store::config_history::{ConfigHistory, Recorded};
use meshlens_store::{Store, StoreConfig};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NETWORKING: &str = "networking.istio.io/v1";

/// The documents of a fixture file, in namespace `default`.
fn fixture_objects(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(path)).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .map(|mut v| {
            v["metadata"]["namespace"] = json!("default");
            v
        })
        .collect()
}

/// Bookinfo as a cluster would hold it: its Services, one running Pod per Deployment (with the pod
/// template's labels, an IP and a sidecar), an EndpointSlice for reviews, the Ingress, the gateway and
/// its VirtualService, and a VirtualService routing to subset v3 of reviews — with no DestinationRule
/// defining that subset yet.
fn bookinfo_cluster() -> Vec<Value> {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    ];
    let mut reviews_endpoints = Vec::new();
    for (i, doc) in fixture_objects("istio-samples/bookinfo/platform/kube/bookinfo.yaml").into_iter().enumerate() {
        match doc["kind"].as_str() {
            Some("Service") => objects.push(doc),
            Some("Deployment") => {
                let name = doc["metadata"]["name"].as_str().unwrap();
                let template = &doc["spec"]["template"];
                let mut labels = template["metadata"]["labels"].clone();
                labels["security.istio.io/tlsMode"] = json!("istio");
                let ip = format!("10.244.0.{}", 10 + i);
                if name.starts_with("reviews") {
                    reviews_endpoints.push(json!({
                        "addresses": [ip], "conditions": {"ready": true},
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("{name}-7bf8c9648f-x2x4z")},
                    }));
                }
                objects.push(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{name}-7bf8c9648f-x2x4z"), "namespace": "default", "labels": labels,
                                 "uid": format!("uid-{i}"), "creationTimestamp": "2026-01-01T00:00:00Z",
                                 "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
                    "spec": template["spec"],
                    "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
                }));
            }
            _ => {} // ServiceAccounts are not watched
        }
    }
    objects.push(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "reviews-abcde", "namespace": "default", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4", "endpoints": reviews_endpoints,
        "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
    }));
    objects.extend(fixture_objects("istio-samples/bookinfo/platform/kube/bookinfo-ingress.yaml"));
    objects.extend(fixture_objects("istio-samples/bookinfo/networking/bookinfo-gateway.yaml"));
    objects.extend(fixture_objects("istio-samples/bookinfo/networking/virtual-service-reviews-v3.yaml"));
    objects
}

fn destination_rule_reviews() -> Value {
    fixture_objects("istio-samples/bookinfo/networking/destination-rule-reviews.yaml").remove(0)
}

fn reviews_route_to(subset: &str) -> Value {
    let mut vs = fixture_objects("istio-samples/bookinfo/networking/virtual-service-reviews-v3.yaml").remove(0);
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = json!(subset);
    vs
}

fn options() -> WatchOptions {
    WatchOptions {
        debounce: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        initial_sync_timeout: Duration::from_secs(20),
    }
}

/// The IST0101 (referenced resource not found) findings on `resource`.
fn missing_references(snapshot: &ClusterSnapshot, resource: &str) -> Vec<String> {
    ConfigAnalyzer::new(MeshSettings::default())
        .analyze(&snapshot.report)
        .into_iter()
        .filter(|f| f.code == "IST0101" && f.resource == resource)
        .map(|f| f.message)
        .collect()
}

fn keys(snapshot: &ClusterSnapshot) -> Vec<String> {
    snapshot.report.resources.iter().map(|r| r.origin.file.clone()).collect()
}

/// The next snapshot, within a deadline.
async fn next(watch: &mut ClusterWatch) -> Arc<ClusterSnapshot> {
    tokio::time::timeout(Duration::from_secs(20), watch.changed())
        .await
        .expect("a new snapshot within 20 s")
        .expect("the watch is running")
}

async fn record(history: &ConfigHistory, snapshot: &ClusterSnapshot) -> meshlens_store::config_history::ConfigVersion {
    match history.record("kube", &snapshot.digests).await.unwrap() {
        Recorded::New(version) => version,
        Recorded::Unchanged(version) => panic!("expected a new config version, the latest is {}", version.id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_list_events_and_relist_into_snapshot_history_and_findings() {
    let api = FakeApi::start(bookinfo_cluster(), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let target = KubeTarget { kubeconfig: Some(api.kubeconfig(dir.path())), context: None };
    let cluster = connect(&target).await.unwrap();
    let mut watch = ClusterWatch::start(&cluster, options()).await.unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("data"))).await.unwrap();
    let history = ConfigHistory::new(store.catalog().clone());

    // Initial list: every object, through the file loader, named by its origin.
    let first = watch.current();
    assert!(watch.skipped().is_empty(), "{:?}", watch.skipped());
    assert!(first.report.errors.is_empty(), "{:?}", first.report.errors);
    let origins = keys(&first);
    for expected in [
        "kube:Namespace/default",
        "kube:Service/default/reviews",
        "kube:Pod/default/reviews-v3-7bf8c9648f-x2x4z",
        "kube:Ingress/default/gateway",
        "kube:Gateway/default/bookinfo-gateway",
        "kube:VirtualService/default/reviews",
    ] {
        assert!(origins.iter().any(|o| o == expected), "{expected} missing from {origins:?}");
    }
    assert!(first.digests.contains_key("EndpointSlice default/reviews-abcde"));
    let pods = first.report.resources.iter().filter(|r| r.origin.file.starts_with("kube:Pod/")).count();
    assert_eq!(pods, 6);
    let v1 = record(&history, &first).await;
    assert_eq!(v1.changes.added.len(), first.digests.len());
    assert!(v1.changes.added.contains(&"VirtualService default/reviews".to_owned()));
    // Subset v3 is routed to, but no DestinationRule defines it.
    assert_eq!(missing_references(&first, "VirtualService default/reviews").len(), 1);

    // ADDED: the DestinationRule with the subsets.
    api.apply(destination_rule_reviews());
    let added = next(&mut watch).await;
    assert!(keys(&added).contains(&"kube:DestinationRule/default/reviews".to_owned()));
    let v2 = record(&history, &added).await;
    assert_eq!(v2.changes.added, ["DestinationRule default/reviews"]);
    assert!(v2.changes.modified.is_empty() && v2.changes.deleted.is_empty());
    assert_eq!(missing_references(&added, "VirtualService default/reviews"), Vec::<String>::new());

    // A BOOKMARK moves the resource version but changes nothing: no snapshot.
    api.bookmark();
    assert!(tokio::time::timeout(Duration::from_secs(1), watch.changed()).await.is_err(), "a bookmark is no change");

    // MODIFIED: route to a subset that does not exist.
    api.apply(reviews_route_to("v9"));
    let modified = next(&mut watch).await;
    let v3 = record(&history, &modified).await;
    assert_eq!(v3.changes.modified, ["VirtualService default/reviews"]);
    let missing = missing_references(&modified, "VirtualService default/reviews");
    assert!(missing.len() == 1 && missing[0].contains("v9"), "{missing:?}");

    // DELETED: the gateway, which the bookinfo VirtualService names.
    assert!(missing_references(&modified, "VirtualService default/bookinfo").is_empty());
    api.delete(NETWORKING, "Gateway", "default", "bookinfo-gateway");
    let deleted = next(&mut watch).await;
    assert!(!keys(&deleted).contains(&"kube:Gateway/default/bookinfo-gateway".to_owned()));
    let v4 = record(&history, &deleted).await;
    assert_eq!(v4.changes.deleted, ["Gateway default/bookinfo-gateway"]);
    assert_eq!(missing_references(&deleted, "VirtualService default/bookinfo").len(), 1);

    // 410 Gone: a change whose event was compacted away reaches the snapshot only through the relist.
    api.apply_silently(reviews_route_to("v2"));
    api.expire();
    let relisted = next(&mut watch).await;
    let v5 = record(&history, &relisted).await;
    assert_eq!(v5.changes.modified, ["VirtualService default/reviews"]);
    assert!(missing_references(&relisted, "VirtualService default/reviews").is_empty());
    let lists = api.requests_matching("/apis/networking.istio.io/v1/virtualservices?");
    // The watcher lists in pages of 500; the start-up probe asks for one object.
    let full_lists = lists.iter().filter(|r| !r.contains("watch=") && r.contains("limit=500")).count();
    assert!(full_lists >= 2, "the watcher listed again after 410 Gone: {lists:?}");
    assert!(api.requests_matching("allowWatchBookmarks=true").len() >= 13, "every kind is watched with bookmarks");

    // The history, newest first, tells the same story.
    let listed: Vec<i64> = history.list(10, None).await.unwrap().iter().map(|v| v.id).collect();
    assert_eq!(listed, [v5.id, v4.id, v3.id, v2.id, v1.id]);
    drop(watch);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_istio_groups_are_skipped_and_the_rest_is_watched() {
    let api = FakeApi::start(bookinfo_cluster(), &["networking.istio.io", "security.istio.io"]).await;
    let dir = tempfile::tempdir().unwrap();
    let target = KubeTarget { kubeconfig: Some(api.kubeconfig(dir.path())), context: None };
    let cluster = connect(&target).await.unwrap();
    let mut watch = ClusterWatch::start(&cluster, options()).await.unwrap();
    let skipped: Vec<&str> = watch.skipped().iter().map(|s| s.kind.kind).collect();
    assert_eq!(
        skipped,
        [
            "Gateway",
            "VirtualService",
            "DestinationRule",
            "ServiceEntry",
            "WorkloadEntry",
            "Sidecar",
            "PeerAuthentication",
            "AuthorizationPolicy"
        ]
    );
    assert!(watch.skipped()[0].reason.contains("CustomResourceDefinition is not installed"), "{:?}", watch.skipped());
    // Both versions were tried, then nothing more was asked of the missing groups.
    assert_eq!(api.requests_matching("/apis/networking.istio.io/").len(), 12);
    let first = watch.current();
    assert!(keys(&first).contains(&"kube:Service/default/reviews".to_owned()));
    assert!(!keys(&first).iter().any(|k| k.starts_with("kube:VirtualService")));

    // The core kinds are still followed.
    let loaded = first.report.resources.iter().find(|r| r.origin.file.starts_with("kube:Pod/")).unwrap();
    let mut pod = serde_json::to_value(&loaded.resource).unwrap();
    pod["apiVersion"] = json!("v1");
    pod["status"]["podIP"] = json!("10.244.9.9");
    api.apply(pod);
    let changed = next(&mut watch).await;
    assert_eq!(
        changed.digests.len(),
        first.digests.len(),
        "a modified Pod is the same set of objects with one new digest"
    );
    assert_ne!(changed.digests, first.digests);
}

/// `meshlens serve --kube` end to end: the API serves the cluster's configuration and its history.
#[test]
fn serve_kube_puts_the_cluster_config_in_force_and_records_each_change() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = runtime.block_on(FakeApi::start(bookinfo_cluster(), &[]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let serve = Collector::start_with(&[
        "--kube",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--kube-debounce-ms",
        "200",
        "--insecure-no-auth",
    ]);
    let get = |path: &str| {
        let response = http("GET", serve.api, path, &[], b"");
        assert_eq!(response.status, 200, "{path}: {}", String::from_utf8_lossy(&response.body));
        response.json()
    };
    let config = get("/api/v1/config");
    assert_eq!(config["counts"]["Pod"], 6, "{config}");
    assert_eq!(config["counts"]["VirtualService"], 2, "{config}");
    let missing_subsets = || {
        let findings = get("/api/v1/findings?source=config&code=IST0101");
        let items = findings["items"].as_array().unwrap().clone();
        items.into_iter().filter(|f| f["resource"] == "VirtualService default/reviews").count()
    };
    assert_eq!(missing_subsets(), 1, "subset v3 has no DestinationRule yet");
    let history = get("/api/v1/config/history");
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{history}");
    assert_eq!(versions[0]["source"], "kube");
    assert_eq!(history["current"], versions[0]["id"]);
    assert_eq!(config["config_version"], versions[0]["id"]);

    api.apply(destination_rule_reviews());
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = loop {
        let history = get("/api/v1/config/history");
        if history["versions"].as_array().unwrap().len() == 2 {
            break history;
        }
        assert!(Instant::now() < deadline, "no second config version: {history}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let newest = &history["versions"][0];
    assert_eq!(newest["added"], json!(["DestinationRule default/reviews"]));
    assert_eq!(history["current"], newest["id"]);
    assert_eq!(get("/api/v1/config")["counts"]["DestinationRule"], 1);
    assert_eq!(missing_subsets(), 0, "the DestinationRule defines subset v3");
    let page = get("/api/v1/config/history?limit=1");
    assert_eq!(page["versions"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap();
    assert_eq!(get(next)["versions"][0]["id"], history["versions"][1]["id"]);
}

/// Runs `meshlens serve --kube` against a kubeconfig naming a port nobody listens on.
fn serve_unreachable(extra: &[&str]) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {{server: 'http://{unused}'}}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: u}}\n\
             current-context: gone\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let child = Command::new(BIN)
        .args(["serve", "--kube", "--kubeconfig", kubeconfig.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, dir)
}

#[test]
fn serve_kube_against_an_unreachable_api_server_fails_start_up_clearly() {
    let (child, _dir) = serve_unreachable(&[]);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_ne!(output.status.code(), Some(101), "no panic: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("cannot reach the Kubernetes API server at http://127.0.0.1:"), "{stderr}");
    assert!(stderr.to_lowercase().contains("connection refused"), "the cause is named: {stderr}");
}

#[test]
fn serve_kube_optional_starts_and_keeps_retrying() {
    let (mut child, _dir) = serve_unreachable(&["--kube-optional"]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut listening, mut retries) = (false, 0);
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && (retries < 2 || !listening) {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        listening |= line.starts_with("meshlens listening ");
        if line.contains("cannot watch the Kubernetes cluster, retrying in") {
            retries += 1;
        }
        assert!(!line.contains("panicked"), "{line}");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "serve started without the cluster");
    assert!(retries >= 2, "kept retrying ({retries} retries seen)");
}

/// Files-based serve records its configuration as a version too, and a restart on the same files reuses it.
#[test]
fn serve_files_records_the_initial_version_once() {
    let networking = fixture("istio-samples/bookinfo/networking/virtual-service-all-v1.yaml");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let versions_after_start = || {
        let mut child = Command::new(BIN)
            .args(["serve", "-f", networking.to_str().unwrap(), "--insecure-no-auth", "--data-dir"])
            .arg(&data)
            .args(["--otlp-grpc-addr", "off", "--otlp-http-addr", "off", "--api-addr", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("meshlens listening ") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited before listening");
        }
        let api: std::net::SocketAddr = line.trim().rsplit_once("api=").unwrap().1.parse().unwrap();
        let response = http("GET", api, "/api/v1/config/history", &[], b"");
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
        let _ = child.kill();
        let _ = child.wait();
        response.json()
    };
    let first = versions_after_start();
    let [version] = first["versions"].as_array().unwrap().as_slice() else { panic!("one version: {first}") };
    assert_eq!(version["source"], "files");
    assert_eq!(version["added"].as_array().unwrap().len(), 4, "{version}");
    assert_eq!(first["current"], version["id"]);
    let second = versions_after_start();
    assert_eq!(second["versions"], first["versions"], "the same files are the same version");
}
