//! Running the analyses for a request: the traffic analyses over a [`Window`] of the store, next to the
//! static findings of the configuration in force. The endpoints, the reports and the charts all start here,
//! so they agree with each other and with `meshlens analyze`.

use crate::error::ApiError;
use crate::state::{AppState, MeshSnapshot};
use chrono::{DateTime, TimeDelta, Utc};
use meshlens_analyzer::traffic::{self, TrafficOptions, TrafficReport, Window};
use std::sync::Arc;

/// The window analyzed when a request names none.
pub const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(1);

/// The result of one analysis run, and the configuration it was read against.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub mesh: Arc<MeshSnapshot>,
    pub traffic: TrafficReport,
}

/// The window ending now, of `length` (or [`DEFAULT_WINDOW`]).
pub fn window_until_now(length: Option<TimeDelta>) -> Window {
    let end = Utc::now();
    let start = end.checked_sub_signed(length.unwrap_or(DEFAULT_WINDOW)).unwrap_or(DateTime::UNIX_EPOCH);
    Window { start, end }
}

/// Runs every traffic analysis over `window` against the configuration in force.
pub async fn run(state: &AppState, window: Window) -> Result<Analysis, ApiError> {
    let mesh = state.mesh();
    let ctx = state.store.session_context();
    let traffic =
        traffic::analyze(&ctx, &mesh.mesh, window, &TrafficOptions::default()).await.map_err(ApiError::internal)?;
    Ok(Analysis { mesh, traffic })
}
