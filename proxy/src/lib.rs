//! meshlens' bundled proxy: an Istio-compatible ingress gateway and mTLS sidecar, configured by the same
//! Kubernetes and Istio resources meshlens analyzes (Gateway, VirtualService, DestinationRule,
//! PeerAuthentication, AuthorizationPolicy, Ingress, Service, Pod, WorkloadEntry), and reporting in Istio's
//! vocabulary (access-log format, response flags, `istio_*` metrics) so that its telemetry feeds meshlens
//! like any Envoy's.
//!
//! The request path is a sequence of stages ([`stack`]), one future per request, over a config [`config::Snapshot`] compiled
//! from the model's `MeshConfig`: routes ([`route`]), clusters with DestinationRule traffic policy
//! ([`cluster`]), policies ([`authz`]). Listeners ([`server`]) terminate TLS and serve HTTP/2 through
//! hyper; HTTP/1.1, on both sides, is the proxy's own (`h1`). [`tls`] and [`ca`] provide SPIFFE identities; [`telemetry`] writes access logs and metrics and [`otlp`] exports spans and
//! access-log records over OTLP. Every locally generated answer is a [`ProxyError`], mapped to status,
//! response flag and details in one place ([`error`]). The crate depends only on `meshlens-model`.

pub mod authz;
pub mod ca;
pub mod cluster;
pub mod config;
pub mod error;
mod h1;
pub mod otlp;
mod proxy;
pub mod route;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod tls;

pub use error::ProxyError;
pub use otlp::OtlpOptions;
pub use proxy::{
    CommonOptions, IdentityOptions, IngressOptions, Running, SidecarOptions, StartError, start_ingress, start_sidecar,
};
pub use server::Limits;
pub use telemetry::{AccessLogFormat, AccessLogTarget};

/// Errors carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of every layer.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;
