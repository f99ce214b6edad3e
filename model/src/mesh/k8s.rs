//! Core Kubernetes kinds: Namespace, Service, Pod, Deployment, Secret and networking.k8s.io Ingress.

use super::meta::{IntOrString, LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A namespaced object with a `spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Object<S> {
    pub metadata: ObjectMeta,
    pub spec: S,
}

pub type Namespace = Object<NamespaceSpec>;
pub type Service = Object<ServiceSpec>;
pub type Deployment = Object<DeploymentSpec>;
pub type Ingress = Object<IngressSpec>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NamespaceSpec {}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer`, `ExternalName`.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// Pods (and WorkloadEntries) with these labels back the service; `None` means manually managed endpoints.
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Vec<ServicePort>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    pub external_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub node_port: Option<u16>,
}

/// A Pod: labels, service account and (when captured from a live cluster) its IP.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still seen in old manifests.
    pub service_account: Option<String>,
    pub containers: Vec<Container>,
    pub node_name: Option<String>,
}

impl PodSpec {
    /// The effective service account (`default` when unset, as Kubernetes does).
    pub fn service_account(&self) -> &str {
        self.service_account_name.as_deref().or(self.service_account.as_deref()).unwrap_or("default")
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: Option<String>,
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: u16,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    pub phase: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentSpec {
    pub replicas: Option<u32>,
    pub selector: LabelSelector,
    pub template: PodTemplate,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodTemplate {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

/// A Secret, reduced to what config checks need: its type and the names of its keys (values are dropped
/// at load time so key material never sits in meshlens' memory or storage).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Secret {
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    #[serde(deserialize_with = "keys_only")]
    pub data: BTreeMap<String, String>,
}

fn keys_only<'de, D: serde::Deserializer<'de>>(de: D) -> Result<BTreeMap<String, String>, D::Error> {
    let data: BTreeMap<String, serde::de::IgnoredAny> = Deserialize::deserialize(de)?;
    Ok(data.into_keys().map(|k| (k, String::new())).collect())
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressSpec {
    pub ingress_class_name: Option<String>,
    /// `defaultBackend` (v1) or `backend` (extensions/v1beta1).
    #[serde(alias = "backend")]
    pub default_backend: Option<IngressBackend>,
    pub tls: Vec<IngressTls>,
    pub rules: Vec<IngressRule>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressTls {
    pub hosts: Vec<String>,
    pub secret_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressRule {
    /// `None` matches every host.
    pub host: Option<String>,
    pub http: Option<HttpIngressRuleValue>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpIngressRuleValue {
    pub paths: Vec<HttpIngressPath>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpIngressPath {
    pub path: Option<String>,
    /// `Exact`, `Prefix` or `ImplementationSpecific` (the default).
    pub path_type: Option<String>,
    pub backend: IngressBackend,
}

/// The v1 form (`service: {name, port: {number|name}}`) and the v1beta1 form (`serviceName`, `servicePort`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressBackend {
    pub service: Option<IngressServiceBackend>,
    pub service_name: Option<String>,
    pub service_port: Option<IntOrString>,
}

impl IngressBackend {
    /// Service name and port, whichever API version wrote them.
    pub fn target(&self) -> Option<(&str, Option<IntOrString>)> {
        if let Some(svc) = &self.service {
            let port = svc
                .port
                .as_ref()
                .and_then(|p| p.number.map(|n| IntOrString::Int(n.into())).or(p.name.clone().map(IntOrString::String)));
            return Some((svc.name.as_str(), port));
        }
        self.service_name.as_deref().map(|name| (name, self.service_port.clone()))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressServiceBackend {
    pub name: String,
    pub port: Option<ServiceBackendPort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceBackendPort {
    pub number: Option<u16>,
    pub name: Option<String>,
}
