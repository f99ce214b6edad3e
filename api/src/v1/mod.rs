//! The analysis endpoints of `/api/v1`, one module each: the service graph, mTLS coverage, route usage,
//! resilience gaps, recommendations, findings and the configuration in force. Each parses its parameters
//! with [`crate::params`], takes the analyses for the caller's scope from [`crate::analysis::cache`] and answers one page
//! of its list in the same envelope: `items`, `total` (items across all pages), `limit`, `offset`, next to
//! the `window` and `namespace` the answer covers and the endpoint's own summary fields. [`tokens`] manages
//! API tokens over HTTP (unscoped admins only).

pub mod config;
pub mod findings;
pub mod graph;
pub mod mtls;
pub mod recommendations;
pub mod resilience;
pub mod routes;
pub mod tokens;

use crate::analysis::cache::WindowSpec;
use crate::analysis::{self, Analysis};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::params::{self, Page, Params};
use crate::state::AppState;
use axum::Router;
use axum::routing::{delete, get};
use chrono::Utc;
use http::Uri;
use meshlens_analyzer::traffic::Window;
use std::sync::Arc;
use utoipa::IntoResponses;

/// The analysis routes (relative to `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/graph", get(graph::graph))
        .route("/mtls/coverage", get(mtls::coverage))
        .route("/routes", get(routes::routes))
        .route("/resilience/gaps", get(resilience::gaps))
        .route("/recommendations", get(recommendations::recommendations))
        .route("/findings", get(findings::findings))
        .route("/config", get(config::config))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", delete(tokens::revoke))
}

/// The parameters every windowed analysis endpoint takes.
pub const WINDOW_PARAMS: [&str; 6] = ["window", "start", "end", "namespace", "limit", "offset"];

/// A parsed request to a windowed analysis endpoint.
#[derive(Debug)]
pub struct AnalysisRequest {
    pub params: Params,
    pub window: Window,
    /// `window` as the request named it, relative to now or fixed.
    pub window_spec: WindowSpec,
    pub namespace: Option<String>,
    pub page: Page,
}

impl AnalysisRequest {
    /// Parses the window, namespace and page (and the endpoint's `extra` parameter names) of `uri`.
    pub fn parse(state: &AppState, caller: &Caller, uri: &Uri, extra: &[&str]) -> Result<Self, ApiError> {
        let accepted: Vec<&str> = WINDOW_PARAMS.iter().chain(extra).copied().collect();
        let params = Params::parse(uri, &accepted)?;
        let limits = &state.limits().config;
        let window = params::window(&params, limits, Utc::now())?;
        let window_spec = if params.get("start").is_none() && params.get("end").is_none() {
            WindowSpec::UntilNow(window.end - window.start)
        } else {
            WindowSpec::Fixed { start: window.start, end: window.end }
        };
        let namespace = params::namespace(&params, caller)?;
        let page = Page::from_params(&params, limits)?;
        Ok(AnalysisRequest { params, window, window_spec, namespace, page })
    }

    /// The analyses this request covers, from the cache when it has a usable result
    /// ([`analysis::cache`]); the result's `window` is the one analyzed.
    pub async fn run(&self, state: &AppState) -> Result<Arc<Analysis>, ApiError> {
        analysis::cache::analysis(state, self.window_spec, self.namespace.as_deref()).await
    }

    /// Whether something in namespace `namespace` (`None`: in none) is visible to this request.
    pub fn shows(&self, namespace: Option<&str>) -> bool {
        self.namespace.as_deref().is_none_or(|scope| namespace == Some(scope))
    }
}

/// The error answers every endpoint may give, for the OpenAPI document.
#[derive(IntoResponses)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub enum ErrorResponses {
    /// A parameter is unknown, repeated or invalid; the message says which and why.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No bearer token, or an unknown or revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token's role or namespace scope does not allow this request.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Too many requests from this token or address; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// A failure of the server; the log has the details under the response's `x-request-id`.
    #[response(status = 500)]
    Internal(ErrorBody),
}
