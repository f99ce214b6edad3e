//! Analyses of observed traffic: the `requests` table (one row per proxied request, columns named after
//! [`RequestRecord`]'s fields) over a time [`Window`], queried with DataFusion SQL and read against the
//! [`MeshConfig`].
//!
//! - [`mtls`]: per edge, namespace and overall, how much traffic was mutual, plaintext or unknown, next to
//!   the configured PeerAuthentication mode;
//! - [`routes`]: per configured route, requests, errors and latency; dead routes, NR traffic, and weighted
//!   splits that drift from their weights;
//! - [`resilience`]: per service and route, what is configured (timeout, retries, outlier detection,
//!   connection limits) next to the failures observed, and retry amplification along call chains;
//! - [`recommend`]: timeouts, retries and outlier detection computed from the observed latency and
//!   failures, as ready-to-apply YAML.
//!
//! Each reports the same [`Finding`]s as the static checks, with `ML2xxx` [`codes`]. The SQL runs on any
//! [`SessionContext`] with a `requests` table of the store's schema: the store's own, or one built from
//! records in memory with [`requests_context`].

pub mod codes;
pub mod mtls;
mod pass;
pub mod recommend;
pub mod resilience;
pub mod routes;
pub mod stats;

use crate::Finding;
use crate::config::Code;
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use meshlens_model::RequestRecord;
use meshlens_model::mesh::{Kind, LoadedResource, MeshConfig, WorkloadRef};
use meshlens_model::names::service_fqdn_parts;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The time range analyzed: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// The SQL condition selecting `requests` rows in the window. The bounds are compared as strings that
    /// DataFusion casts to the column's type, so the store can prune files by time.
    fn sql(&self) -> String {
        format!(
            "timestamp >= '{}' AND timestamp < '{}'",
            self.start.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.end.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
    }
}

/// Thresholds of the analyses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficOptions {
    /// Requests a PERMISSIVE namespace (or edge) must have received, all mutual, before it is called ready
    /// for STRICT (ML2003). Fewer would be an anecdote, not evidence.
    pub strict_ready_min_requests: u64,
    /// p-value below which an observed split is said to drift from its weights (ML2006).
    pub drift_p_value: f64,
    /// Factor applied to the callee's p99.9 latency to recommend a route timeout.
    pub timeout_margin: f64,
}

impl Default for TrafficOptions {
    fn default() -> Self {
        TrafficOptions { strict_ready_min_requests: 100, drift_p_value: 0.01, timeout_margin: 1.5 }
    }
}

/// Everything the traffic analyses found, as `meshlens analyze -o json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    pub window: Window,
    pub mtls: mtls::MtlsReport,
    pub routes: routes::RouteReport,
    pub resilience: resilience::ResilienceReport,
    pub recommendations: Vec<recommend::Recommendation>,
    /// Most severe first, then by resource, code and message.
    pub findings: Vec<Finding>,
}

/// Why an analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("reading query results: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("building the requests table: {0}")]
    Store(#[from] meshlens_store::StoreError),
}

/// Everything the analyses read from the `requests` table over the window, gathered in [`pass`]'s one scan
/// and aggregated to a few rows per edge, route group, service or endpoint.
struct Evidence {
    /// Client and server records paired by request id, per edge and observed mTLS.
    pairs: Vec<mtls::EdgeRow>,
    /// Client-side requests: route groups, per-service failures, the call graph.
    client: routes::ClientTraffic,
    /// Server-side latency per destination service.
    server_latency: BTreeMap<String, stats::Latency>,
    /// Tries per request as the destinations saw them.
    retries: Vec<resilience::RetryRow>,
    /// 5xx bursts per destination service.
    bursts: Vec<resilience::BurstRow>,
    /// Errors per endpoint.
    endpoints: Vec<recommend::EndpointRow>,
}

/// Runs every traffic analysis over `ctx`'s `requests` table.
pub async fn analyze(
    ctx: &SessionContext,
    mesh: &MeshConfig,
    window: Window,
    options: &TrafficOptions,
) -> Result<TrafficReport, TrafficError> {
    let evidence = pass::gather(ctx, mesh, &window).await?;
    let (mtls, mut findings) = mtls::analyze(mesh, &evidence.pairs, options);
    let (routes, route_findings) = routes::analyze(mesh, &evidence.client.rows, options);
    let (resilience, resilience_findings) = resilience::analyze(mesh, &evidence, &routes);
    let recommendations = recommend::analyze(mesh, options, &evidence, &routes, &resilience);
    findings.extend(route_findings);
    findings.extend(resilience_findings);
    findings.sort_by(|a, b| {
        (Reverse(a.level), &a.resource, &a.code, &a.message).cmp(&(Reverse(b.level), &b.resource, &b.code, &b.message))
    });
    Ok(TrafficReport { window, mtls, routes, resilience, recommendations, findings })
}

/// A session whose `requests` table holds `records` (with the store's schema), for analyzing records that
/// never went through a store, such as access-log files.
pub fn requests_context(records: &[RequestRecord]) -> Result<SessionContext, TrafficError> {
    let table_kind = meshlens_store::Table::Requests;
    let batch =
        meshlens_store::schema::to_query_batch(table_kind, &meshlens_store::schema::requests_to_batch(records)?)?;
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    let ctx = SessionContext::new();
    ctx.register_table(table_kind.name(), Arc::new(table))?;
    Ok(ctx)
}

/// A finding of a traffic code about `resource`, with the code's generic fix.
fn finding(code: &Code, resource: String, origin: Option<String>, message: String) -> Finding {
    Finding { code: code.code.to_owned(), level: code.level, resource, message, origin, fix: Some(code.fix.to_owned()) }
}

/// `file:line` of a loaded resource, as findings cite it.
fn origin_of(loaded: &LoadedResource) -> String {
    format!("{}:{}", loaded.origin.file, loaded.origin.line)
}

/// How findings name a destination host: `Service namespace/name` (with its origin when loaded), or
/// `Host name` for hosts outside Kubernetes.
fn service_resource(mesh: &MeshConfig, fqdn: &str) -> (String, Option<String>) {
    match service_fqdn_parts(fqdn) {
        Some((name, namespace)) => {
            (format!("Service {namespace}/{name}"), mesh.get(Kind::Service, namespace, name).map(origin_of))
        }
        None => (format!("Host {fqdn}"), None),
    }
}

/// `namespace/workload`, or `unknown` when the record does not say.
fn workload_label(namespace: Option<&str>, workload: Option<&str>) -> String {
    match (namespace, workload) {
        (Some(namespace), Some(workload)) => format!("{namespace}/{workload}"),
        (None, Some(workload)) => workload.to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// The workload a record names in `namespace`: a Pod, Deployment or WorkloadEntry of that name, else a Pod
/// whose name extends it (`reviews-v2-7bf8c9648f-4kkx9` for `reviews-v2`: the collector names pods after
/// their Deployment).
fn find_workload<'a>(workloads: &'a [WorkloadRef], namespace: &str, name: &str) -> Option<&'a WorkloadRef> {
    let in_namespace = || workloads.iter().filter(move |w| w.namespace == namespace);
    in_namespace().find(|w| w.name == name).or_else(|| {
        in_namespace()
            .find(|w| w.kind == Kind::Pod && w.name.strip_prefix(name).is_some_and(|rest| rest.starts_with('-')))
    })
}
