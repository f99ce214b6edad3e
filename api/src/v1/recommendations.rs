//! `GET /api/v1/recommendations`: timeouts, retries and outlier detection computed from the observed
//! latency and failures, each with its formula, evidence and confidence, and the changed resource as
//! ready-to-apply YAML (`patch`).

use super::{AnalysisRequest, ErrorResponses};
use crate::analysis::resource_namespace;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{NamespaceDoc, PageDoc, WindowDoc, WindowInfo};
use crate::state::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use http::Uri;
use meshlens_analyzer::traffic::recommend::{self as analyzed, RecommendationKind as AnalyzedKind};
use meshlens_analyzer::traffic::stats::Confidence as AnalyzedConfidence;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// What a recommendation sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationKind {
    Timeout,
    Retries,
    OutlierDetection,
}

impl RecommendationKind {
    fn of(kind: AnalyzedKind) -> RecommendationKind {
        match kind {
            AnalyzedKind::Timeout => RecommendationKind::Timeout,
            AnalyzedKind::Retries => RecommendationKind::Retries,
            AnalyzedKind::OutlierDetection => RecommendationKind::OutlierDetection,
        }
    }

    fn parse(text: &str) -> Result<RecommendationKind, ApiError> {
        match text {
            "timeout" => Ok(RecommendationKind::Timeout),
            "retries" => Ok(RecommendationKind::Retries),
            "outlier_detection" => Ok(RecommendationKind::OutlierDetection),
            other => Err(ApiError::BadRequest(format!(
                "kind: unknown value {other:?} (expected timeout, retries or outlier_detection)"
            ))),
        }
    }
}

/// How far a figure estimated from a sample can be trusted.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl From<AnalyzedConfidence> for Confidence {
    fn from(c: AnalyzedConfidence) -> Self {
        match c {
            AnalyzedConfidence::Low => Confidence::Low,
            AnalyzedConfidence::Medium => Confidence::Medium,
            AnalyzedConfidence::High => Confidence::High,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendation {
    pub kind: RecommendationKind,
    /// The route (`VirtualService ns/name #0`) or service the recommendation is for.
    pub target: String,
    /// The service whose observed behaviour it is computed from.
    pub service: String,
    /// The recommended settings, as they appear in the patch.
    pub value: serde_json::Value,
    /// How the value follows from the evidence, with the numbers filled in.
    pub formula: String,
    /// The observed figures the formula used.
    pub evidence: BTreeMap<String, serde_json::Value>,
    pub confidence: Confidence,
    pub note: Option<String>,
    /// `RecommendationKind namespace/name` of the resource in `patch`.
    pub resource: String,
    /// The resource with every recommendation for it applied, as YAML ready for `kubectl apply`.
    pub patch: String,
}

impl From<&analyzed::Recommendation> for Recommendation {
    fn from(r: &analyzed::Recommendation) -> Self {
        Recommendation {
            kind: RecommendationKind::of(r.kind),
            target: r.target.clone(),
            service: r.service.clone(),
            value: r.value.clone(),
            formula: r.formula.clone(),
            evidence: r.evidence.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            confidence: r.confidence.into(),
            note: r.note.clone(),
            resource: r.resource.clone(),
            patch: r.patch.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendationsResponse {
    pub window: WindowInfo,
    pub namespace: Option<String>,
    pub items: Vec<Recommendation>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// Parameters of `/recommendations` besides the window, namespace and page (OpenAPI only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct RecommendationsDoc {
    /// Only these kinds (comma-separated): timeout, retries, outlier_detection.
    #[param(example = "timeout,retries")]
    pub kind: Option<String>,
}

/// Recommended timeouts, retries and outlier detection, with patches.
#[utoipa::path(
    get,
    path = "/api/v1/recommendations",
    tag = "analyses",
    params(WindowDoc, NamespaceDoc, PageDoc, RecommendationsDoc),
    responses((status = 200, description = "Recommendations", body = RecommendationsResponse), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn recommendations(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<RecommendationsResponse>, ApiError> {
    let request = AnalysisRequest::parse(&state, &caller, &uri, &["kind"])?;
    let kinds =
        request.params.list("kind").into_iter().map(RecommendationKind::parse).collect::<Result<Vec<_>, _>>()?;
    let analysis = request.run(&state).await?;
    let recommendations: Vec<Recommendation> = analysis
        .traffic
        .recommendations
        .iter()
        // A patch shows the whole resource: only resources of the scope's namespace.
        .filter(|r| request.shows(resource_namespace(&r.resource)))
        .map(Recommendation::from)
        .filter(|r| kinds.is_empty() || kinds.contains(&r.kind))
        .collect();
    let (items, total) = request.page.slice(recommendations);
    Ok(Json(RecommendationsResponse {
        window: analysis.window.into(),
        namespace: request.namespace,
        items,
        total,
        limit: request.page.limit,
        offset: request.page.offset,
    }))
}
