//! Running the analyses for a request: the traffic analyses over a [`Window`] of the store, the service
//! graph, next to the static findings of the configuration in force. The endpoints, the reports and the
//! charts all start here, so they agree with each other and with `meshlens analyze`.
//!
//! A namespace scope is applied to the data before any analysis reads it: the `requests` table the
//! analyses see holds only records whose source or destination namespace is the scope's, so nothing
//! computed from another namespace's traffic can reach a scoped caller. What comes from the configuration
//! alone (unused routes, config findings, patches) is filtered by the namespace of its resource with
//! [`resource_namespace`] and [`host_namespace`] by the endpoints.

pub mod cache;

use crate::error::ApiError;
use crate::state::{AppState, MeshSnapshot};
use chrono::{DateTime, TimeDelta, Utc};
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use meshlens_analyzer::traffic::{self, TrafficOptions, TrafficReport, Window};
use meshlens_model::mesh::Kind;
use meshlens_model::names::service_fqdn_parts;
use meshlens_store::Table;
use std::sync::Arc;

/// The window analyzed when a request names none.
pub const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(1);

/// The result of one analysis run, and the configuration it was read against.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The window analyzed.
    pub window: Window,
    pub mesh: Arc<MeshSnapshot>,
    pub traffic: TrafficReport,
    /// The service graph of the same window and scope.
    pub graph: Graph,
    /// The namespace the traffic was restricted to, if any.
    pub namespace: Option<String>,
}

/// The window ending now, of `length` (or [`DEFAULT_WINDOW`]).
pub fn window_until_now(length: Option<TimeDelta>) -> Window {
    let end = Utc::now();
    let start = end.checked_sub_signed(length.unwrap_or(DEFAULT_WINDOW)).unwrap_or(DateTime::UNIX_EPOCH);
    Window { start, end }
}

/// Runs every traffic analysis over `window` against the configuration in force, now (reports use this;
/// the endpoints go through [`cache::analysis`]).
pub async fn run(state: &AppState, window: Window) -> Result<Analysis, ApiError> {
    run_with(state, state.mesh(), window, None).await
}

/// Runs every analysis over `window` against `mesh`, on the records of `namespace` only (source or
/// destination) when given, on the query executor ([`crate::executor`]).
async fn run_with(
    state: &AppState,
    mesh: Arc<MeshSnapshot>,
    window: Window,
    namespace: Option<&str>,
) -> Result<Analysis, ApiError> {
    let ctx = scoped_context(state, namespace).await?;
    let namespace = namespace.map(str::to_owned);
    state
        .executor()
        .run(async move {
            let traffic = traffic::analyze(&ctx, &mesh.mesh, window, &TrafficOptions::default())
                .await
                .map_err(ApiError::internal)?;
            let graph = Graph::of(&traffic);
            Ok(Analysis { window, mesh, traffic, graph, namespace })
        })
        .await?
}

/// A session whose `requests` table is the store's, restricted to `namespace`'s records when given.
async fn scoped_context(state: &AppState, namespace: Option<&str>) -> Result<SessionContext, ApiError> {
    let store_ctx = state.store.session_context();
    let Some(namespace) = namespace else { return Ok(store_ctx) };
    let requests = Table::Requests.name();
    let scoped = store_ctx
        .table(requests)
        .await
        .and_then(|frame| {
            frame.filter(col("source_namespace").eq(lit(namespace)).or(col("destination_namespace").eq(lit(namespace))))
        })
        .map_err(ApiError::internal)?
        .into_view();
    // A fresh session (same settings) so that `requests` names the restricted view and nothing else is
    // reachable; the store's own session shares its catalog and must not be changed.
    let config: SessionConfig = store_ctx.state().config().clone();
    let ctx = SessionContext::new_with_config(config);
    ctx.register_table(requests, scoped).map_err(ApiError::internal)?;
    Ok(ctx)
}

/// The namespace of a resource reference as findings and reports write it: `Kind namespace/name`; `Kind
/// name` for a namespaced kind whose document named no namespace is in `default` (where `kubectl apply`
/// puts it); a `Namespace name` is its own namespace; `None` for references to no Kubernetes resource
/// (`Host example.com`).
pub fn resource_namespace(reference: &str) -> Option<&str> {
    let (kind, rest) = reference.split_once(' ')?;
    let rest = rest.split_once(' ').map_or(rest, |(name, _)| name);
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    match rest.split_once('/') {
        Some((namespace, _)) => Some(namespace),
        None if kind == Kind::Namespace => Some(rest),
        None => Some("default"),
    }
}

/// The namespace of a Kubernetes service host (`reviews.bookinfo.svc.cluster.local`), or of a graph node
/// written `namespace/workload`.
pub fn host_namespace(host: &str) -> Option<&str> {
    service_fqdn_parts(host).map(|(_, namespace)| namespace).or_else(|| host.split_once('/').map(|(ns, _)| ns))
}

/// Requests from one source to one destination in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphEdge {
    /// `namespace/workload`, `unknown@IP` or `unknown`, as in the mTLS analysis.
    pub source: String,
    pub source_namespace: Option<String>,
    /// Destination service FQDN, or `namespace/workload` when only the server's workload is known.
    pub destination: String,
    pub destination_namespace: Option<String>,
    pub requests: u64,
    /// Requests with status 5xx or no response.
    pub errors: u64,
    pub mutual: u64,
    pub plaintext: u64,
    pub unknown: u64,
    /// Latency percentiles (milliseconds) as the client saw it when it logged the request, else the
    /// server; exact, rounded to 0.1 ms.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The service graph: who called whom, how often, how well and how securely.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    /// Most requests first, then by source and destination.
    pub edges: Vec<GraphEdge>,
}

impl Graph {
    /// The graph of an analysis: its mTLS edges, which pair client and server records of each request
    /// (a pair counts once; a request logged by one side only counts on its own), so the graph's request
    /// and mTLS counts are `/mtls/coverage`'s.
    pub fn of(traffic: &TrafficReport) -> Graph {
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let mut edges: Vec<GraphEdge> = traffic
            .mtls
            .edges
            .iter()
            .map(|edge| GraphEdge {
                source: edge.source.clone(),
                source_namespace: edge.source_namespace.clone(),
                destination: edge.destination.clone(),
                destination_namespace: edge.destination_namespace.clone(),
                requests: edge.counts.requests,
                errors: edge.errors,
                mutual: edge.counts.mutual,
                plaintext: edge.counts.plaintext,
                unknown: edge.counts.unknown,
                p50_ms: edge.latency.map(|l| round(l.p50_ms)),
                p95_ms: edge.latency.map(|l| round(l.p95_ms)),
                p99_ms: edge.latency.map(|l| round(l.p99_ms)),
            })
            .collect();
        edges.sort_by(|a, b| {
            b.requests.cmp(&a.requests).then_with(|| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)))
        });
        Graph { edges }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_namespaces() {
        assert_eq!(resource_namespace("Service bookinfo/reviews"), Some("bookinfo"));
        assert_eq!(resource_namespace("VirtualService shop/web \"api\""), Some("shop"));
        assert_eq!(resource_namespace("Namespace bookinfo"), Some("bookinfo"));
        assert_eq!(resource_namespace("VirtualService reviews"), Some("default"));
        assert_eq!(resource_namespace("Host api.example.com"), None);
        assert_eq!(resource_namespace("nonsense"), None);
        assert_eq!(host_namespace("reviews.bookinfo.svc.cluster.local"), Some("bookinfo"));
        assert_eq!(host_namespace("bookinfo/reviews-v1"), Some("bookinfo"));
        assert_eq!(host_namespace("api.example.com"), None);
    }
}
