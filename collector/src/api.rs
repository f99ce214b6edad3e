//! The API listener's own routes: the probes and the self-metrics. The REST API (`/api/v1`, crate
//! `meshlens-api`) is merged beside them by [`crate::server::start`]; probes stay unauthenticated.

use crate::internal_events::Telemetry;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use meshlens_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared state of the API handlers.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    /// True while every receiver is accepting data; false before start-up completes and during shutdown.
    pub ready: Arc<AtomicBool>,
}

/// `/healthz` (the process is up), `/readyz` (receivers accept data), `/metrics` (Prometheus text).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut text = state.telemetry.render();
    let stats = state.store.stats();
    // The store's own gauges, so that one scrape shows whether refusals come from a full buffer.
    for (name, help, value) in [
        ("store_buffered_rows", "Rows in memory, not yet in Parquet.", stats.buffered_rows as u64),
        ("store_reserved_bytes", "Bytes of rows counted against the memory budget.", stats.reserved_bytes as u64),
    ] {
        text.push_str(&format!(
            "# HELP meshlens_{name} {help}\n# TYPE meshlens_{name} gauge\nmeshlens_{name} {value}\n"
        ));
    }
    for (name, help, value) in [
        ("store_wal_syncs_total", "WAL fsyncs.", stats.wal_syncs),
        ("store_flushes_total", "Flushes of the buffer to Parquet.", stats.flushes),
        ("store_rows_flushed_total", "Rows written to Parquet.", stats.rows_flushed),
    ] {
        text.push_str(&format!(
            "# HELP meshlens_{name} {help}\n# TYPE meshlens_{name} counter\nmeshlens_{name} {value}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
