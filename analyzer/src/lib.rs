//! meshlens' analyses: what is wrong or risky in a service mesh, found by comparing what the mesh is told
//! to do with what it can do.
//!
//! - [`config`]: static checks of Kubernetes/Istio configuration, with no cluster and no telemetry. They
//!   reproduce `istioctl analyze` (same `IST` codes, levels and message texts) and add meshlens' own
//!   resilience and security checks (`ML1xxx` codes) that istioctl never makes; [`config::CHECKS`] and
//!   [`config::CODES`] list what exists, for documentation and `--help`.
//! - [`traffic`]: analyses of observed requests over a time window (SQL over the store's `requests`
//!   table) against the configuration: mTLS coverage, route usage, resilience gaps and recommendations
//!   (`ML2xxx` codes, [`traffic::codes::CODES`]).
//!
//! Both report [`Finding`]s.

pub mod config;
mod finding;
pub mod traffic;

pub use finding::{Finding, Level, UnknownLevel};
