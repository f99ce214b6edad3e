//! meshlens' analyses: what is wrong or risky in a service mesh, found by comparing what the mesh is told
//! to do with what it can do.
//!
//! Today that is [`config`]: static checks of Kubernetes/Istio configuration, with no cluster and no
//! telemetry. They reproduce `istioctl analyze` (same `IST` codes, levels and message texts) and add
//! meshlens' own resilience and security checks (`ML` codes) that istioctl never makes. Every check reports
//! [`Finding`]s; [`config::CHECKS`] and [`config::CODES`] list what exists, for documentation and `--help`.
//! Analyses of observed traffic will live beside `config` and report the same [`Finding`]s.

pub mod config;
mod finding;

pub use finding::{Finding, Level, UnknownLevel};
