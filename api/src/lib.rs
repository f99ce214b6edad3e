//! meshlens' REST API under `/api/v1`: the analyses (service graph, mTLS coverage, route usage, resilience
//! gaps, recommendations, config findings), the mesh config in force, read-only SQL over the telemetry,
//! charts, and compliance reports with their schedules — everything the dashboard and scripts read.
//!
//! [`router`] builds the whole API from an [`AppState`] and is tested with `oneshot`; `meshlens serve`
//! mounts it on the API listener next to the collector's probes and metrics. Every handler returns
//! `Result<_, ApiError>` and [`ApiError`] is the one place errors become responses (`{"error":{"code",
//! "message"}}`; internal causes are logged with the request id, never sent).
//!
//! Around every route: a request id (`x-request-id`, kept from the request or made up, returned on every
//! response and carried by every log line of the request), the body limit, error bodies in the API's shape
//! even for axum's own rejections, and — on the `/api/v1` routes except the OpenAPI document —
//! authentication ([`auth::authenticate`]: bearer token, role, namespace scope) with the rate limit.
//! `/docs` serves the interactive documentation of `/api/v1/openapi.json` ([`openapi`]), and `/` the web
//! dashboard ([`dashboard`]), whose files need no token: the page reads `/api/v1` with the user's.

pub mod analysis;
pub mod auth;
pub mod charts;
pub mod config_history;
pub mod dashboard;
mod error;
pub mod executor;
pub mod limits;
pub mod openapi;
pub mod params;
pub mod reports;
pub mod schedules;
pub mod sql;
mod state;
pub mod tokens;
pub mod v1;

pub use auth::{Caller, Role};
pub use error::{ApiError, ErrorBody};
pub use limits::ApiLimits;
pub use state::{AppState, MeshSnapshot};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;
use utoipa_swagger_ui::SwaggerUi;

/// The REST API over `state`: `/api/v1/...`, `/api/v1/openapi.json`, `/docs`, and the dashboard at `/`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits().config.body_bytes;
    let v1 = Router::new()
        .merge(v1::routes())
        .merge(sql::routes())
        .merge(charts::routes())
        .merge(reports::routes())
        .merge(schedules::routes())
        .merge(config_history::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .nest("/api/v1", v1)
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi::document()))
        .merge(dashboard::routes())
        .fallback(not_found)
        .layer(middleware::from_fn(error::json_errors))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Any path the API does not have.
async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no such path: {}", request.uri().path()))
}

/// Runs the request inside a span carrying its request id, so that every log line it causes (internal
/// errors above all) can be found from the `x-request-id` the client got.
async fn request_span(request: Request, next: Next) -> Response {
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let span =
        tracing::info_span!("api_request", request_id = %id, method = %request.method(), path = %request.uri().path());
    next.run(request).instrument(span).await
}
