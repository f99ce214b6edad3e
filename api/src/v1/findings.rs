//! `GET /api/v1/findings`: the findings of the static checks over the configuration in force (IST and
//! ML1xxx codes) and of the traffic analyses over the window (ML2xxx), most severe first; filtered by
//! level, code and source.

use super::{AnalysisRequest, ErrorResponses};
use crate::analysis::resource_namespace;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{NamespaceDoc, PageDoc, WindowDoc, WindowInfo};
use crate::state::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use http::Uri;
use meshlens_analyzer::{Finding as AnalyzedFinding, Level as AnalyzedLevel, config, traffic};
use serde::Serialize;
use std::cmp::Reverse;
use utoipa::{IntoParams, ToSchema};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl From<AnalyzedLevel> for Level {
    fn from(level: AnalyzedLevel) -> Self {
        match level {
            AnalyzedLevel::Info => Level::Info,
            AnalyzedLevel::Warning => Level::Warning,
            AnalyzedLevel::Error => Level::Error,
        }
    }
}

/// Which analysis found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingSource {
    /// The static checks of the configuration in force.
    Config,
    /// The analyses of the traffic in the window.
    Traffic,
}

impl FindingSource {
    fn parse(text: &str) -> Result<FindingSource, ApiError> {
        match text {
            "config" => Ok(FindingSource::Config),
            "traffic" => Ok(FindingSource::Traffic),
            other => Err(ApiError::BadRequest(format!("source: unknown value {other:?} (expected config or traffic)"))),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Finding {
    /// `IST0101` (istioctl's code for the same problem) or `ML1001` (meshlens' own).
    pub code: String,
    pub level: Level,
    /// `Kind namespace/name`, or `Kind name` when the document gave no namespace.
    pub resource: String,
    pub message: String,
    /// `file:line` of the document the resource came from.
    pub origin: Option<String>,
    /// How to fix it.
    pub fix: Option<String>,
    pub source: FindingSource,
}

/// Findings on all pages, by level.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct LevelCounts {
    pub error: u64,
    pub warning: u64,
    pub info: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FindingsResponse {
    pub window: WindowInfo,
    pub namespace: Option<String>,
    /// Most severe first, then by resource, code and message.
    pub items: Vec<Finding>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
    pub counts: LevelCounts,
}

/// Parameters of `/findings` besides the window, namespace and page (OpenAPI only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct FindingsDoc {
    /// Only these levels (comma-separated, any case): error, warning, info.
    #[param(example = "error,warning")]
    pub level: Option<String>,
    /// Only these codes (comma-separated), e.g. `IST0101,ML2001`; an unknown code is a 400.
    #[param(example = "ML2001")]
    pub code: Option<String>,
    /// Only findings of the configuration (`config`) or of the traffic (`traffic`).
    #[param(example = "traffic")]
    pub source: Option<String>,
}

fn finding(f: &AnalyzedFinding, source: FindingSource) -> Finding {
    Finding {
        code: f.code.clone(),
        level: f.level.into(),
        resource: f.resource.clone(),
        message: f.message.clone(),
        origin: f.origin.clone(),
        fix: f.fix.clone(),
        source,
    }
}

/// Config and traffic findings.
#[utoipa::path(
    get,
    path = "/api/v1/findings",
    tag = "analyses",
    params(WindowDoc, NamespaceDoc, PageDoc, FindingsDoc),
    responses((status = 200, description = "Findings", body = FindingsResponse), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn findings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<FindingsResponse>, ApiError> {
    let request = AnalysisRequest::parse(&state, &caller, &uri, &["level", "code", "source"])?;
    let levels = request
        .params
        .list("level")
        .into_iter()
        .map(|l| l.parse::<AnalyzedLevel>().map(Level::from).map_err(|e| ApiError::BadRequest(format!("level: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let codes = request.params.list("code");
    for code in &codes {
        let known = config::CODES.iter().chain(traffic::codes::CODES).any(|c| c.code == *code);
        if !known {
            return Err(ApiError::BadRequest(format!("code: unknown code {code:?} (docs/findings.md lists them)")));
        }
    }
    let sources = request.params.list("source").into_iter().map(FindingSource::parse).collect::<Result<Vec<_>, _>>()?;

    let analysis = request.run(&state).await?;
    let mut all: Vec<Finding> = analysis
        .mesh
        .config_findings
        .iter()
        .map(|f| finding(f, FindingSource::Config))
        .chain(analysis.traffic.findings.iter().map(|f| finding(f, FindingSource::Traffic)))
        .filter(|f| request.shows(resource_namespace(&f.resource)))
        .filter(|f| levels.is_empty() || levels.contains(&f.level))
        .filter(|f| codes.is_empty() || codes.contains(&f.code.as_str()))
        .filter(|f| sources.is_empty() || sources.contains(&f.source))
        .collect();
    all.sort_by(|a, b| {
        (Reverse(a.level), &a.resource, &a.code, &a.message).cmp(&(Reverse(b.level), &b.resource, &b.code, &b.message))
    });
    let mut counts = LevelCounts::default();
    for f in &all {
        match f.level {
            Level::Error => counts.error += 1,
            Level::Warning => counts.warning += 1,
            Level::Info => counts.info += 1,
        }
    }
    let (items, total) = request.page.slice(all);
    Ok(Json(FindingsResponse {
        window: analysis.window.into(),
        namespace: request.namespace,
        items,
        total,
        limit: request.page.limit,
        offset: request.page.offset,
        counts,
    }))
}
