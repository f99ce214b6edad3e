//! `GET /api/v1/mtls/coverage`: how much traffic was mutually authenticated — overall, per destination
//! namespace and per edge — beside the configured PeerAuthentication mode, with each edge and namespace
//! classified (violation, at risk, ready to tighten, compliant).

use super::{AnalysisRequest, ErrorResponses};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{NamespaceDoc, PageDoc, WindowDoc, WindowInfo};
use crate::state::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use http::Uri;
use meshlens_analyzer::traffic::mtls;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// How observed traffic compares with the configured mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MtlsClassification {
    /// Plaintext arrived where STRICT is configured (ML2001).
    Violation,
    /// PERMISSIVE, and plaintext was observed (ML2002).
    AtRisk,
    /// PERMISSIVE, but everything observed (at least the minimum number of requests) was mutual (ML2003).
    ReadyToTighten,
    /// What was observed is what the configuration allows.
    Compliant,
}

impl MtlsClassification {
    fn of(c: mtls::Classification) -> Self {
        match c {
            mtls::Classification::Violation => MtlsClassification::Violation,
            mtls::Classification::AtRisk => MtlsClassification::AtRisk,
            mtls::Classification::ReadyToTighten => MtlsClassification::ReadyToTighten,
            mtls::Classification::Compliant => MtlsClassification::Compliant,
        }
    }

    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "violation" => Ok(MtlsClassification::Violation),
            "at_risk" => Ok(MtlsClassification::AtRisk),
            "ready_to_tighten" => Ok(MtlsClassification::ReadyToTighten),
            "compliant" => Ok(MtlsClassification::Compliant),
            other => Err(ApiError::BadRequest(format!(
                "classification: unknown value {other:?} (expected violation, at_risk, ready_to_tighten or compliant)"
            ))),
        }
    }
}

/// Requests by what was observed about their mTLS.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct MtlsCounts {
    pub requests: u64,
    pub mutual: u64,
    pub plaintext: u64,
    pub unknown: u64,
    /// Client-side `unknown`s settled by the server's record of the same request (included in `mutual`
    /// and `plaintext`).
    pub resolved_by_pairing: u64,
    /// `mutual / requests`; 0 without requests.
    pub mutual_share: f64,
}

impl From<&mtls::Counts> for MtlsCounts {
    fn from(c: &mtls::Counts) -> Self {
        MtlsCounts {
            requests: c.requests,
            mutual: c.mutual,
            plaintext: c.plaintext,
            unknown: c.unknown,
            resolved_by_pairing: c.resolved_by_pairing,
            mutual_share: if c.requests == 0 { 0.0 } else { c.mutual as f64 / c.requests as f64 },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NamespaceCoverage {
    /// The destination namespace.
    pub namespace: String,
    pub counts: MtlsCounts,
    /// The configured PeerAuthentication modes of the edges into the namespace.
    pub modes: Vec<String>,
    pub classification: MtlsClassification,
    /// Sources of plaintext into the namespace, with their request counts.
    pub plaintext_sources: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MtlsEdge {
    /// `namespace/workload` of the client, `unknown@IP` or `unknown`.
    pub source: String,
    /// Destination service FQDN, or `namespace/workload`.
    pub destination: String,
    pub destination_namespace: Option<String>,
    pub counts: MtlsCounts,
    /// Effective PeerAuthentication mode where the requests arrive (STRICT, PERMISSIVE, DISABLE, UNSET).
    pub peer_authentication: String,
    /// `trafficPolicy.tls.mode` of the DestinationRule the client uses, when it sets one.
    pub client_tls: Option<String>,
    pub classification: MtlsClassification,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CoverageResponse {
    pub window: WindowInfo,
    pub namespace: Option<String>,
    pub overall: MtlsCounts,
    pub namespaces: Vec<NamespaceCoverage>,
    /// Requests a PERMISSIVE namespace or edge must have received, all mutual, to be `ready_to_tighten`.
    pub strict_ready_min_requests: u64,
    /// Edges, by source then destination.
    pub items: Vec<MtlsEdge>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// Parameters of `/mtls/coverage` besides the window, namespace and page (OpenAPI only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct CoverageDoc {
    /// Only edges of these classifications (comma-separated): violation, at_risk, ready_to_tighten,
    /// compliant.
    #[param(example = "violation,at_risk")]
    pub classification: Option<String>,
}

/// mTLS coverage of the window.
#[utoipa::path(
    get,
    path = "/api/v1/mtls/coverage",
    tag = "analyses",
    params(WindowDoc, NamespaceDoc, PageDoc, CoverageDoc),
    responses((status = 200, description = "mTLS coverage", body = CoverageResponse), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn coverage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<CoverageResponse>, ApiError> {
    let request = AnalysisRequest::parse(&state, &caller, &uri, &["classification"])?;
    let classes = request
        .params
        .list("classification")
        .into_iter()
        .map(MtlsClassification::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let analysis = request.run(&state).await?;
    let report = &analysis.traffic.mtls;
    let edges: Vec<MtlsEdge> = report
        .edges
        .iter()
        .map(|e| MtlsEdge {
            source: e.source.clone(),
            destination: e.destination.clone(),
            destination_namespace: e.destination_namespace.clone(),
            counts: (&e.counts).into(),
            peer_authentication: e.configured.peer_authentication.to_owned(),
            client_tls: e.configured.client_tls.map(str::to_owned),
            classification: MtlsClassification::of(e.classification),
        })
        .filter(|e| classes.is_empty() || classes.contains(&e.classification))
        .collect();
    let namespaces = report
        .namespaces
        .iter()
        // Coverage of another namespace, seen only through the scope's own calls into it, would be partial.
        .filter(|n| request.shows(Some(&n.namespace)))
        .map(|n| NamespaceCoverage {
            namespace: n.namespace.clone(),
            counts: (&n.counts).into(),
            modes: n.modes.iter().map(|m| (*m).to_owned()).collect(),
            classification: MtlsClassification::of(n.classification),
            plaintext_sources: n.plaintext_sources.clone(),
        })
        .collect();
    let (items, total) = request.page.slice(edges);
    Ok(Json(CoverageResponse {
        window: analysis.window.into(),
        namespace: request.namespace,
        overall: (&report.overall).into(),
        namespaces,
        strict_ready_min_requests: report.strict_ready_min_requests,
        items,
        total,
        limit: request.page.limit,
        offset: request.page.offset,
    }))
}
