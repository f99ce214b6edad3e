//! Istio's mesh-wide settings (the `MeshConfig` in the `istio` ConfigMap, `istioctl analyze --meshConfigFile`).

use super::LoadError;
use serde::{Deserialize, Serialize};

/// The parts of Istio's MeshConfig that change how configuration is interpreted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshSettings {
    /// Namespace whose policies apply mesh-wide (default `istio-system`).
    pub root_namespace: String,
    pub trust_domain: String,
    /// Whether clients pick mTLS automatically for endpoints with sidecars (default true).
    pub enable_auto_mtls: bool,
    pub outbound_traffic_policy: Option<super::networking::OutboundTrafficPolicy>,
    /// Telemetry providers (`envoyHttpAls`, `envoyOtelAls`, `opentelemetry`, ...), kept as written.
    pub extension_providers: Vec<serde_json::Value>,
    pub default_config: Option<serde_json::Value>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            root_namespace: super::snapshot::DEFAULT_ROOT_NAMESPACE.to_owned(),
            trust_domain: super::snapshot::DEFAULT_DOMAIN.to_owned(),
            enable_auto_mtls: true,
            outbound_traffic_policy: None,
            extension_providers: Vec::new(),
            default_config: None,
        }
    }
}

impl MeshSettings {
    /// Parses a MeshConfig YAML document; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<MeshSettings, Box<LoadError>> {
        let de = yaml_serde::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let location = err.inner().location();
            Box::new(LoadError {
                file: file.to_owned(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                document: None,
                resource: Some("MeshConfig".to_owned()),
                field: Some(err.path().to_string()).filter(|p| p != "."),
                message: err.inner().to_string(),
            })
        })
    }

    /// Reads and parses a MeshConfig file.
    pub fn load(path: &std::path::Path) -> Result<MeshSettings, Box<LoadError>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| {
            Box::new(LoadError {
                file: file.clone(),
                line: None,
                column: None,
                document: None,
                resource: None,
                field: None,
                message: format!("cannot read: {err}"),
            })
        })?;
        Self::parse(&file, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_missing_fields() {
        let settings = MeshSettings::parse("m.yaml", "defaultConfig:\n  image:\n    imageType: distroless\n").unwrap();
        assert_eq!(settings.root_namespace, "istio-system");
        assert!(settings.enable_auto_mtls);
        let settings = MeshSettings::parse("m.yaml", "rootNamespace: mesh-root\nenableAutoMtls: false\n").unwrap();
        assert_eq!(settings.root_namespace, "mesh-root");
        assert!(!settings.enable_auto_mtls);
    }

    #[test]
    fn errors_are_located() {
        let err = MeshSettings::parse("m.yaml", "rootNamespace: x\nenableAutoMtls: [1]\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.field.as_deref(), Some("enableAutoMtls"));
    }
}
