//! deploy/: every Kubernetes manifest parses into its k8s-openapi type without losing a field, the
//! kustomizations reference files that exist, the Deployment is locked down and probed, the RBAC rules
//! grant exactly get/list/watch on exactly the kinds the watcher lists, and the Istio files point at the
//! Service the base creates.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, Namespace, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use meshlens_collector::kube::WATCHED_KINDS;
use meshlens_model::mesh::MeshSettings;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

/// The documents of a YAML file, as JSON values (comments and empty documents dropped).
fn documents(path: &str) -> Vec<Value> {
    let file = deploy(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every manifest document of the base, by file.
fn base_documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for name in kustomization("base/kustomization.yaml").resources {
        for doc in documents(&format!("base/{name}")) {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

/// Deserializes into `T` and checks that serializing back gives the same document: a misspelt or
/// misplaced field, which k8s-openapi would silently drop, fails here.
fn typed<T: DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let object: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(&back, doc, "{file}: fields lost or changed in a round trip through the k8s-openapi type");
    object
}

fn one<T: DeserializeOwned + serde::Serialize>(kind: &str) -> T {
    let matching: Vec<(String, Value)> = base_documents().into_iter().filter(|(_, d)| d["kind"] == kind).collect();
    let [(file, doc)] = matching.as_slice() else {
        panic!("expected one {kind} in deploy/base, found {}", matching.len())
    };
    typed(file, doc)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // fields are read by serde's checks, not by the tests
struct Kustomization {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    namespace: Option<String>,
    #[serde(default)]
    labels: Vec<Value>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    patches: Vec<Patch>,
    #[serde(default)]
    images: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    path: String,
    target: Option<Value>,
}

fn kustomization(path: &str) -> Kustomization {
    let [doc] = documents(path).try_into().unwrap_or_else(|d: Vec<Value>| panic!("{path}: {} documents", d.len()));
    let k: Kustomization = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!((k.api_version.as_str(), k.kind.as_str()), ("kustomize.config.k8s.io/v1beta1", "Kustomization"));
    k
}

#[test]
fn every_base_manifest_parses_into_its_kubernetes_type() {
    let mut kinds = Vec::new();
    for (file, doc) in base_documents() {
        let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{file}: no kind")).to_owned();
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(&file, &doc)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(&file, &doc)),
            "ClusterRole" => drop(typed::<ClusterRole>(&file, &doc)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&file, &doc)),
            "Deployment" => drop(typed::<Deployment>(&file, &doc)),
            "Service" => drop(typed::<Service>(&file, &doc)),
            "PersistentVolumeClaim" => drop(typed::<PersistentVolumeClaim>(&file, &doc)),
            other => panic!("{file}: unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "PersistentVolumeClaim",
            "Service",
            "ServiceAccount"
        ]
    );
}

#[test]
fn kustomizations_list_every_manifest_and_only_existing_files() {
    let base = kustomization("base/kustomization.yaml");
    assert_eq!(base.namespace.as_deref(), Some("meshlens"));
    let listed: BTreeSet<String> = base.resources.iter().cloned().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy("base"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk, "deploy/base/kustomization.yaml resources vs the files beside it");
    for (file, doc) in base_documents() {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "ClusterRoleBinding" && doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "meshlens", "{file}");
        }
    }

    let postgres = kustomization("overlays/postgres/kustomization.yaml");
    assert_eq!(postgres.resources, ["../../base"]);
    assert!(deploy("overlays/postgres/../../base/kustomization.yaml").is_file());
    let [patch] = postgres.patches.as_slice() else { panic!("one patch expected") };
    assert_eq!(patch.target.as_ref().unwrap()["kind"], "Deployment");
    let [doc] = documents(&format!("overlays/postgres/{}", patch.path)).try_into().unwrap();
    // A strategic-merge patch is a partial Deployment: same name, same container name, and a database
    // URL taken from a Secret (never written into the manifest).
    let base_deployment: Deployment = one("Deployment");
    assert_eq!(doc["metadata"]["name"].as_str(), base_deployment.metadata.name.as_deref());
    let containers = doc["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let [container] = containers.as_slice() else { panic!("one container in the patch") };
    assert_eq!(container["name"], base_container(&base_deployment).name.as_str());
    let env: Vec<EnvVar> = serde_json::from_value(container["env"].clone()).unwrap();
    let url = env.iter().find(|e| e.name == "MESHLENS_DATABASE_URL").expect("MESHLENS_DATABASE_URL set");
    assert_eq!(url.value, None, "the database URL comes from a Secret");
    let secret = url.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("secretKeyRef");
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("meshlens-postgres", "url"));
}

fn base_container(deployment: &Deployment) -> Container {
    let spec = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let [container] = spec.containers.as_slice() else { panic!("one container") };
    container.clone()
}

#[test]
fn the_deployment_runs_locked_down_with_requests_and_probes() {
    let deployment: Deployment = one("Deployment");
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1), "one writer per data directory");
    let pod = spec.template.spec.as_ref().unwrap();
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid != 0));

    let container = base_container(&deployment);
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let requests = container.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"), "{requests:?}");

    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    assert!(args.iter().any(|a| a == "--kube"), "the in-cluster deployment watches the cluster: {args:?}");
    let api_port = container.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("http-api")).unwrap();
    assert!(args.iter().any(|a| *a == format!("--api-addr=0.0.0.0:{}", api_port.container_port)), "{args:?}");
    for (probe, path) in [(&container.readiness_probe, "/readyz"), (&container.liveness_probe, "/healthz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{path} probe"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(serde_json::to_value(&get.port).unwrap(), "http-api", "{path} is served on the API listener");
    }

    // The read-only root needs every written path on a volume: the data directory on the claim.
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a == "--data-dir=/var/lib/meshlens"));
    let data = mounts.iter().find(|m| m.mount_path == "/var/lib/meshlens").expect("data directory mounted");
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == data.name).unwrap();
    let claim: PersistentVolumeClaim = one("PersistentVolumeClaim");
    assert_eq!(
        Some(volume.persistent_volume_claim.as_ref().unwrap().claim_name.as_str()),
        claim.metadata.name.as_deref()
    );
    let account: ServiceAccount = one("ServiceAccount");
    assert_eq!(pod.service_account_name, account.metadata.name);
}

#[test]
fn the_service_exposes_the_receivers_and_the_api_of_the_pods() {
    let service: Service = one("Service");
    let deployment: Deployment = one("Deployment");
    let spec = service.spec.as_ref().unwrap();
    let pod_labels = deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
    for (key, value) in spec.selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(key), Some(value), "the selector matches the pods");
    }
    let container_ports: Vec<(String, i32)> = base_container(&deployment)
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.container_port))
        .collect();
    let mut exposed = Vec::new();
    for port in spec.ports.as_ref().unwrap() {
        let target = serde_json::to_value(port.target_port.as_ref().unwrap()).unwrap();
        let (_, number) = container_ports
            .iter()
            .find(|(name, _)| target == name.as_str())
            .unwrap_or_else(|| panic!("targetPort {target} names a container port"));
        assert_eq!(*number, port.port);
        exposed.push(port.port);
    }
    assert_eq!(exposed, [4317, 4318, 8080]);
}

#[test]
fn rbac_grants_read_only_access_to_exactly_the_watched_kinds() {
    let role: ClusterRole = one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.as_ref().unwrap() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "{rule:?}");
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none(), "{rule:?}");
        for group in rule.api_groups.as_ref().unwrap() {
            for resource in rule.resources.as_ref().unwrap() {
                assert!(!group.contains('*') && !resource.contains('*'), "no wildcards: {rule:?}");
                assert!(granted.insert((group.clone(), resource.clone())), "{group}/{resource} granted twice");
            }
        }
    }
    let watched: BTreeSet<(String, String)> =
        WATCHED_KINDS.iter().map(|k| (k.group.to_owned(), k.plural.to_owned())).collect();
    assert_eq!(granted, watched, "deploy/base/rbac.yaml vs meshlens_collector::kube::WATCHED_KINDS");

    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    assert_eq!(
        (binding.role_ref.kind.as_str(), Some(&binding.role_ref.name)),
        ("ClusterRole", role.metadata.name.as_ref())
    );
    let account: ServiceAccount = one("ServiceAccount");
    let [subject] = binding.subjects.as_deref().unwrap() else { panic!("one subject") };
    assert_eq!((subject.kind.as_str(), Some(&subject.name)), ("ServiceAccount", account.metadata.name.as_ref()));
    assert_eq!(subject.namespace, account.metadata.namespace);
}

#[test]
fn istio_providers_and_telemetry_point_at_the_meshlens_service() {
    let service: Service = one("Service");
    let host = format!(
        "{}.{}.svc.cluster.local",
        service.metadata.name.as_deref().unwrap(),
        service.metadata.namespace.as_deref().unwrap()
    );
    let grpc_port = service.spec.unwrap().ports.unwrap().into_iter().find(|p| p.port == 4317).unwrap();
    assert_eq!(grpc_port.app_protocol.as_deref(), Some("grpc"), "Envoy's ALS and OTLP exporters speak gRPC");

    let [operator] = documents("istio/istio-operator.yaml").try_into().unwrap();
    assert_eq!(
        (operator["apiVersion"].as_str(), operator["kind"].as_str()),
        (Some("install.istio.io/v1alpha1"), Some("IstioOperator"))
    );
    // The meshConfig section is what `meshlens serve --mesh-config` and istioctl read: the model parses it.
    let mesh_config = yaml_serde::to_string(&operator["spec"]["meshConfig"]).unwrap();
    let settings = MeshSettings::parse("istio/istio-operator.yaml", &mesh_config).unwrap();
    let mut providers = BTreeSet::new();
    for provider in &settings.extension_providers {
        let name = provider["name"].as_str().unwrap().to_owned();
        let (kind, target) = provider
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| *k != "name")
            .unwrap_or_else(|| panic!("provider {name} has a type"));
        assert!(["envoyHttpAls", "envoyOtelAls", "opentelemetry"].contains(&kind.as_str()), "{kind}");
        assert_eq!(target["service"], host.as_str(), "{name}");
        assert_eq!(target["port"], 4317, "{name}");
        providers.insert(name);
    }

    let [telemetry] = documents("istio/telemetry.yaml").try_into().unwrap();
    assert_eq!(
        (telemetry["apiVersion"].as_str(), telemetry["kind"].as_str()),
        (Some("telemetry.istio.io/v1"), Some("Telemetry"))
    );
    assert_eq!(telemetry["metadata"]["namespace"], settings.root_namespace.as_str(), "mesh-wide: the root namespace");
    let mut enabled = Vec::new();
    for section in ["accessLogging", "tracing"] {
        for entry in telemetry["spec"][section].as_array().unwrap_or_else(|| panic!("spec.{section}")) {
            for provider in entry["providers"].as_array().unwrap() {
                let name = provider["name"].as_str().unwrap();
                assert!(
                    providers.contains(name),
                    "{section} enables {name}, which istio-operator.yaml does not define"
                );
                enabled.push(section);
            }
        }
    }
    assert_eq!(enabled, ["accessLogging", "tracing"]);
}

#[test]
fn the_image_runs_as_the_deployments_user_and_exposes_the_service_ports() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let deployment: Deployment = one("Deployment");
    let uid = deployment.spec.unwrap().template.spec.unwrap().security_context.unwrap().run_as_user.unwrap();
    assert!(dockerfile.lines().any(|l| l == format!("USER {uid}:{uid}")), "USER {uid}:{uid}");
    assert!(dockerfile.lines().any(|l| l == "EXPOSE 4317 4318 8080"));
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "multi-stage: build, then a small runtime image");
}
