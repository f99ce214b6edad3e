//! `GET /api/v1/graph`: the service graph of a window — nodes (workloads and services) and edges with
//! request rate, error rate, latency percentiles and the share of mutual TLS.

use super::{AnalysisRequest, ErrorResponses};
use crate::analysis::GraphEdge as ObservedEdge;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{NamespaceDoc, PageDoc, WindowDoc, WindowInfo};
use crate::state::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use http::Uri;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What a node of the graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A calling workload (`namespace/workload`), or a destination known only by its workload.
    Workload,
    /// A destination service (its FQDN).
    Service,
    /// A client the records do not name (`unknown`, `unknown@IP`).
    Unknown,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphNode {
    /// The name edges use for it: `namespace/workload`, a service FQDN, `unknown@IP` or `unknown`.
    pub id: String,
    pub kind: NodeKind,
    pub namespace: Option<String>,
    /// Requests it received and sent over the edges of this page.
    pub requests_in: u64,
    pub requests_out: u64,
    /// Of the requests it received, those that failed (5xx or no response).
    pub errors_in: u64,
}

/// mTLS of an edge's requests, by what was observed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeMtls {
    pub mutual: u64,
    pub plaintext: u64,
    /// Neither side's record says (a client's outbound record with no server record to pair with).
    pub unknown: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    pub source: String,
    pub source_namespace: Option<String>,
    pub destination: String,
    pub destination_namespace: Option<String>,
    pub requests: u64,
    /// Requests per second over the window.
    pub rate: f64,
    /// Requests with status 5xx or no response.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Latency percentiles in milliseconds (exact), as the client saw it when it logged the request,
    /// else as the server did; `null` without durations.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mtls: EdgeMtls,
    /// `mtls.mutual / requests`: the share of requests seen to be mutually authenticated.
    pub mtls_share: f64,
}

/// The graph: the edges of this page, busiest first, and the nodes they connect.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphResponse {
    pub window: WindowInfo,
    pub namespace: Option<String>,
    pub nodes: Vec<GraphNode>,
    /// Edges, most requests first.
    pub items: Vec<GraphEdge>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn edge(edge: ObservedEdge, seconds: f64) -> GraphEdge {
    GraphEdge {
        rate: if seconds > 0.0 { (edge.requests as f64 / seconds * 1000.0).round() / 1000.0 } else { 0.0 },
        error_rate: ratio(edge.errors, edge.requests),
        mtls_share: ratio(edge.mutual, edge.requests),
        mtls: EdgeMtls { mutual: edge.mutual, plaintext: edge.plaintext, unknown: edge.unknown },
        source: edge.source,
        source_namespace: edge.source_namespace,
        destination: edge.destination,
        destination_namespace: edge.destination_namespace,
        requests: edge.requests,
        errors: edge.errors,
        p50_ms: edge.p50_ms,
        p95_ms: edge.p95_ms,
        p99_ms: edge.p99_ms,
    }
}

fn nodes(edges: &[GraphEdge]) -> Vec<GraphNode> {
    let mut nodes: BTreeMap<&str, GraphNode> = BTreeMap::new();
    for edge in edges {
        let source_kind = if edge.source.starts_with("unknown") { NodeKind::Unknown } else { NodeKind::Workload };
        let source = nodes.entry(&edge.source).or_insert_with(|| GraphNode {
            id: edge.source.clone(),
            kind: source_kind,
            namespace: edge.source_namespace.clone(),
            requests_in: 0,
            requests_out: 0,
            errors_in: 0,
        });
        source.requests_out += edge.requests;
        let destination_kind = if edge.destination.contains('/') { NodeKind::Workload } else { NodeKind::Service };
        let destination = nodes.entry(&edge.destination).or_insert_with(|| GraphNode {
            id: edge.destination.clone(),
            kind: destination_kind,
            namespace: edge.destination_namespace.clone(),
            requests_in: 0,
            requests_out: 0,
            errors_in: 0,
        });
        destination.requests_in += edge.requests;
        destination.errors_in += edge.errors;
    }
    nodes.into_values().collect()
}

/// The service graph of the window.
#[utoipa::path(
    get,
    path = "/api/v1/graph",
    tag = "analyses",
    params(WindowDoc, NamespaceDoc, PageDoc),
    responses((status = 200, description = "The service graph", body = GraphResponse), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn graph(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<GraphResponse>, ApiError> {
    let request = AnalysisRequest::parse(&state, &caller, &uri, &[])?;
    let analysis = request.run(&state).await?;
    let window = analysis.window;
    let seconds = (window.end - window.start).num_milliseconds() as f64 / 1000.0;
    let edges: Vec<GraphEdge> = analysis.graph.edges.iter().cloned().map(|e| edge(e, seconds)).collect();
    let (items, total) = request.page.slice(edges);
    Ok(Json(GraphResponse {
        window: window.into(),
        namespace: request.namespace,
        nodes: nodes(&items),
        items,
        total,
        limit: request.page.limit,
        offset: request.page.offset,
    }))
}
