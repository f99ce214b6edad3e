//! meshlens' canonical data model, shared by every other crate.
//!
//! It holds what the collector produces and the analyzer consumes — the normalized [`RequestRecord`] and
//! [`SpanRecord`] — plus the vocabulary both need to reason about a mesh: SPIFFE [`identity`], Envoy and
//! Istio [`names`] (cluster names, mTLS SNI), and the typed Kubernetes/Istio [`mesh`] configuration with
//! its indexed [`mesh::MeshConfig`] snapshot. The crate does no I/O beyond reading the config files it is
//! pointed at, and nothing here is async.

pub mod identity;
pub mod mesh;
pub mod names;
pub mod record;
pub mod span;

pub use identity::SpiffeId;
pub use record::{Direction, Mtls, Reporter, RequestRecord, SourceFormat};
pub use span::{SpanKind, SpanRecord, SpanStatus};
