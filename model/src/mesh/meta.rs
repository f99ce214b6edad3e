//! Kubernetes object metadata and the small shared shapes (selectors, int-or-string).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The part of `metadata` meshlens uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: String,
    /// `None` when the document did not say; resolution then uses `default`, as `kubectl apply` would.
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub resource_version: Option<String>,
}

impl ObjectMeta {
    /// The namespace the object lives in (`default` when the document did not say).
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// `matchLabels` selector as used by Deployments, Istio `selector` and `workloadSelector`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
}

/// Istio `workloadSelector: {labels: ...}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    pub labels: BTreeMap<String, String>,
}

/// True when every selector label is present with the same value. An empty selector matches everything.
pub fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Kubernetes `IntOrString` (e.g. `targetPort: 8080` or `targetPort: http`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}
