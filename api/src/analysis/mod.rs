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
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use datafusion::arrow::json::ArrayWriter;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use meshlens_analyzer::traffic::{self, TrafficOptions, TrafficReport, Window};
use meshlens_model::mesh::Kind;
use meshlens_model::names::service_fqdn_parts;
use meshlens_store::Table;
use serde::Deserialize;
use std::collections::BTreeMap;
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
            let graph = graph(&ctx, window).await?;
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
    /// server; approximate (t-digest).
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

#[derive(Debug, Deserialize)]
struct EdgeRow {
    source_namespace: Option<String>,
    source_workload: Option<String>,
    source_address: Option<String>,
    destination_service: Option<String>,
    destination_namespace: Option<String>,
    destination_workload: Option<String>,
    requests: u64,
    errors: u64,
    mutual: u64,
    plaintext: u64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// Client and server records of one request are paired by request id and destination service as the mTLS
/// analysis pairs them (a pair counts once; a request logged by one side only counts on its own), so the
/// graph's request counts and mTLS counts agree with `/mtls/coverage`.
fn graph_sql(window: &Window) -> String {
    let bounds = format!(
        "timestamp >= '{}' AND timestamp < '{}'",
        window.start.to_rfc3339_opts(SecondsFormat::Micros, true),
        window.end.to_rfc3339_opts(SecondsFormat::Micros, true)
    );
    format!(
        "WITH client AS (
            SELECT request_id, source_namespace, source_workload, destination_service, destination_namespace,
                   destination_workload, status, duration_ms, mtls, TRUE AS logged
            FROM requests WHERE {bounds} AND direction = 'outbound' AND destination_service IS NOT NULL
        ), server AS (
            SELECT request_id, source_namespace, source_workload, destination_service, destination_namespace,
                   destination_workload, downstream_remote_address, status, duration_ms, mtls
            FROM requests WHERE {bounds} AND direction = 'inbound'
        ), paired AS (
            SELECT COALESCE(client.source_namespace, server.source_namespace) AS source_namespace,
                   COALESCE(client.source_workload, server.source_workload) AS source_workload,
                   CASE WHEN client.source_workload IS NULL AND server.source_workload IS NULL
                        THEN regexp_replace(server.downstream_remote_address, ':[0-9]+$', '') END AS source_address,
                   COALESCE(server.destination_service, client.destination_service) AS destination_service,
                   COALESCE(server.destination_namespace, client.destination_namespace) AS destination_namespace,
                   COALESCE(server.destination_workload, client.destination_workload) AS destination_workload,
                   CASE WHEN client.logged THEN client.status ELSE server.status END AS status,
                   CAST(COALESCE(client.duration_ms, server.duration_ms) AS DOUBLE) AS duration_ms,
                   COALESCE(NULLIF(server.mtls, 'unknown'), NULLIF(client.mtls, 'unknown'), 'unknown') AS mtls
            FROM server FULL OUTER JOIN client
              ON server.request_id = client.request_id AND server.destination_service = client.destination_service
        )
        SELECT source_namespace, source_workload, source_address, destination_service, destination_namespace,
               destination_workload,
               COUNT(*) AS requests,
               SUM(CASE WHEN status IS NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors,
               SUM(CASE WHEN mtls = 'mutual' THEN 1 ELSE 0 END) AS mutual,
               SUM(CASE WHEN mtls = 'plaintext' THEN 1 ELSE 0 END) AS plaintext,
               approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
               approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
               approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms
        FROM paired
        GROUP BY 1, 2, 3, 4, 5, 6"
    )
}

/// `namespace/workload`, or `unknown`, as the mTLS analysis names a side of an edge.
fn workload_label(namespace: Option<&str>, workload: Option<&str>) -> String {
    match (namespace, workload) {
        (Some(namespace), Some(workload)) => format!("{namespace}/{workload}"),
        (None, Some(workload)) => workload.to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// The service graph over `ctx`'s `requests` in `window`.
pub async fn graph(ctx: &SessionContext, window: Window) -> Result<Graph, ApiError> {
    let batches =
        ctx.sql(&graph_sql(&window)).await.map_err(ApiError::internal)?.collect().await.map_err(ApiError::internal)?;
    let mut writer = ArrayWriter::new(Vec::new());
    for batch in &batches {
        writer.write(batch).map_err(ApiError::internal)?;
    }
    writer.finish().map_err(ApiError::internal)?;
    let json = writer.into_inner();
    let rows: Vec<EdgeRow> =
        if json.is_empty() { Vec::new() } else { serde_json::from_slice(&json).map_err(ApiError::internal)? };

    // Rows differ by destination workload; an edge is source → destination, so they are summed, and
    // percentiles of the busiest row stand for the edge (percentiles cannot be summed).
    let mut edges: BTreeMap<(String, String), (GraphEdge, u64)> = BTreeMap::new();
    for row in rows {
        let destination = match (&row.destination_service, &row.destination_workload) {
            (Some(service), _) => service.clone(),
            (None, Some(_)) => {
                workload_label(row.destination_namespace.as_deref(), row.destination_workload.as_deref())
            }
            (None, None) => continue,
        };
        let source = match (&row.source_workload, &row.source_address) {
            (None, Some(address)) => format!("unknown@{address}"),
            _ => workload_label(row.source_namespace.as_deref(), row.source_workload.as_deref()),
        };
        let (edge, busiest) = edges.entry((source.clone(), destination.clone())).or_insert_with(|| {
            let edge = GraphEdge {
                source,
                source_namespace: row.source_namespace.clone(),
                destination,
                destination_namespace: row.destination_namespace.clone(),
                requests: 0,
                errors: 0,
                mutual: 0,
                plaintext: 0,
                unknown: 0,
                p50_ms: None,
                p95_ms: None,
                p99_ms: None,
            };
            (edge, 0)
        });
        edge.requests += row.requests;
        edge.errors += row.errors;
        edge.mutual += row.mutual;
        edge.plaintext += row.plaintext;
        edge.unknown += row.requests.saturating_sub(row.mutual + row.plaintext);
        if row.requests > *busiest {
            *busiest = row.requests;
            let round = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| (v * 10.0).round() / 10.0);
            (edge.p50_ms, edge.p95_ms, edge.p99_ms) = (round(row.p50_ms), round(row.p95_ms), round(row.p99_ms));
        }
        if edge.destination_namespace.is_none() {
            edge.destination_namespace = row.destination_namespace;
        }
    }
    let mut edges: Vec<GraphEdge> = edges.into_values().map(|(edge, _)| edge).collect();
    edges.sort_by(|a, b| {
        b.requests.cmp(&a.requests).then_with(|| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)))
    });
    Ok(Graph { edges })
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
