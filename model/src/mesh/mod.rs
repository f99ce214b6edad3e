//! Typed Kubernetes and Istio mesh configuration.
//!
//! [`load`] turns YAML/JSON files (multi-document, `kind: List`, directories) into [`Resource`]s with
//! located errors; [`MeshConfig`] indexes them and answers the questions proxies and analyzers ask: which
//! Service a host names, which endpoints back it, which VirtualService, DestinationRule and
//! PeerAuthentication apply.

pub mod duration;
pub mod k8s;
pub mod load;
pub mod meta;
pub mod networking;
pub mod security;
pub mod settings;
mod snapshot;

pub use duration::Duration;
pub use load::{LoadError, LoadReport, LoadedResource, Origin, SkippedDocument};
pub use meta::ObjectMeta;
pub use settings::MeshSettings;
pub use snapshot::{Endpoint, MeshConfig, WorkloadRef, host_matches, resolve_gateway_ref, resolve_host};

use serde::Serialize;

/// The kinds meshlens understands. Anything else is loaded as skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Namespace,
    Service,
    Pod,
    Deployment,
    Secret,
    Ingress,
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Pod,
        Kind::Deployment,
        Kind::Secret,
        Kind::Ingress,
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    /// The API group that serves this kind (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Service | Kind::Pod | Kind::Secret => "",
            Kind::Deployment => "apps",
            Kind::Ingress => "networking.k8s.io",
            Kind::Gateway
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Sidecar => "networking.istio.io",
            Kind::PeerAuthentication | Kind::AuthorizationPolicy => "security.istio.io",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Recognizes `kind` under `apiVersion`. The group matters: a Kubernetes Gateway API `Gateway`
    /// (`gateway.networking.k8s.io`) is not an Istio `Gateway`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _version)| group);
        let found = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        let group_ok = match found {
            // Ingress was served by extensions/v1beta1 before networking.k8s.io.
            Kind::Ingress => group == "networking.k8s.io" || group == "extensions",
            Kind::Deployment => group == "apps" || group == "extensions",
            other => group == other.group(),
        };
        group_ok.then_some(found)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One typed configuration object.
// Resources are loaded once and indexed; boxing the large variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Resource {
    Namespace(k8s::Namespace),
    Service(k8s::Service),
    Pod(k8s::Pod),
    Deployment(k8s::Deployment),
    Secret(k8s::Secret),
    Ingress(k8s::Ingress),
    Gateway(networking::Gateway),
    VirtualService(networking::VirtualService),
    DestinationRule(networking::DestinationRule),
    ServiceEntry(networking::ServiceEntry),
    WorkloadEntry(networking::WorkloadEntry),
    Sidecar(networking::Sidecar),
    PeerAuthentication(security::PeerAuthentication),
    AuthorizationPolicy(security::AuthorizationPolicy),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Service(_) => Kind::Service,
            Resource::Pod(_) => Kind::Pod,
            Resource::Deployment(_) => Kind::Deployment,
            Resource::Secret(_) => Kind::Secret,
            Resource::Ingress(_) => Kind::Ingress,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Namespace(o) => &o.metadata,
            Resource::Service(o) => &o.metadata,
            Resource::Pod(o) => &o.metadata,
            Resource::Deployment(o) => &o.metadata,
            Resource::Secret(o) => &o.metadata,
            Resource::Ingress(o) => &o.metadata,
            Resource::Gateway(o) => &o.metadata,
            Resource::VirtualService(o) => &o.metadata,
            Resource::DestinationRule(o) => &o.metadata,
            Resource::ServiceEntry(o) => &o.metadata,
            Resource::WorkloadEntry(o) => &o.metadata,
            Resource::Sidecar(o) => &o.metadata,
            Resource::PeerAuthentication(o) => &o.metadata,
            Resource::AuthorizationPolicy(o) => &o.metadata,
        }
    }

    /// The reference used in findings and errors: `Kind namespace/name`, or `Kind name` when the
    /// document gave no namespace (or the kind is cluster-scoped).
    pub fn reference(&self) -> String {
        resource_ref(self.kind(), self.metadata())
    }
}

/// `Kind namespace/name`, or `Kind name` without a namespace.
pub fn resource_ref(kind: Kind, meta: &ObjectMeta) -> String {
    match (&meta.namespace, kind.is_namespaced()) {
        (Some(ns), true) => format!("{kind} {ns}/{}", meta.name),
        _ => format!("{kind} {}", meta.name),
    }
}

/// Decodes one document of a known kind, remembering the field path of any error.
pub(crate) fn decode<'de, D>(kind: Kind, de: D) -> Result<Resource, serde_path_to_error::Error<D::Error>>
where
    D: serde::Deserializer<'de>,
{
    use serde_path_to_error::deserialize as de_at;
    Ok(match kind {
        Kind::Namespace => Resource::Namespace(de_at(de)?),
        Kind::Service => Resource::Service(de_at(de)?),
        Kind::Pod => Resource::Pod(de_at(de)?),
        Kind::Deployment => Resource::Deployment(de_at(de)?),
        Kind::Secret => Resource::Secret(de_at(de)?),
        Kind::Ingress => Resource::Ingress(de_at(de)?),
        Kind::Gateway => Resource::Gateway(de_at(de)?),
        Kind::VirtualService => Resource::VirtualService(de_at(de)?),
        Kind::DestinationRule => Resource::DestinationRule(de_at(de)?),
        Kind::ServiceEntry => Resource::ServiceEntry(de_at(de)?),
        Kind::WorkloadEntry => Resource::WorkloadEntry(de_at(de)?),
        Kind::Sidecar => Resource::Sidecar(de_at(de)?),
        Kind::PeerAuthentication => Resource::PeerAuthentication(de_at(de)?),
        Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(de_at(de)?),
    })
}
