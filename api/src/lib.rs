//! meshlens' REST API under `/api/v1`: the analyses (service graph, mTLS coverage, route usage, resilience
//! gaps, recommendations, config findings), the mesh config in force, read-only SQL over the telemetry,
//! charts, and compliance reports with their schedules — everything the dashboard and scripts read.
//!
//! [`router`] builds the whole API from an [`AppState`] and is tested with `oneshot`; `meshlens serve`
//! mounts it on the API listener next to the collector's probes and metrics. Every handler returns
//! `Result<_, ApiError>` and [`ApiError`] is the one place errors become responses (`{"error":{"code",
//! "message"}}`; internal causes are logged with the request id, never sent).

pub mod analysis;
pub mod auth;
pub mod config_history;
mod error;
pub mod reports;
pub mod schedules;
mod state;

pub use auth::{Caller, Role};
pub use error::ApiError;
pub use state::{AppState, MeshSnapshot};

use axum::Router;
use axum::extract::State;
use axum::routing::get;

/// The `/api/v1` routes over `state`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/config", get(config))
        .merge(reports::routes())
        .merge(schedules::routes())
        .merge(config_history::routes());
    Router::new().nest("/api/v1", v1).with_state(state)
}

/// `GET /api/v1/config`: the mesh configuration in force, with what failed to load.
async fn config(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let mesh = state.mesh();
    axum::Json(mesh.summary())
}
