//! `POST /v1/accesslogs`: a body of access-log lines (text or NDJSON, mixed freely, optionally gzip), for
//! shippers such as Fluent Bit or Vector that tail `istio-proxy` container logs. `?workload=NS/NAME` names
//! the workload whose proxy wrote the lines (see [`crate::attribution`]).
//!
//! The answer is JSON: `{"received": N, "stored": N, "rejected": N, "errors": [{"line": L, "reason": R}]}`
//! (the first few rejected lines). Bad lines do not fail the request, like OTLP's partial success.

use super::convert::LineBatches;
use crate::attribution::ProxyIdentity;
use crate::formats::LineParser;
use crate::internal_events::{Format, Receiver, RequestInvalid};
use crate::sources::body::{self, MAX_BODY_BYTES};
use crate::sources::{MAX_QUOTED_REJECTIONS, SourceContext};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use std::time::Instant;

/// The access-log route, for the HTTP listener's router.
pub fn routes() -> Router<SourceContext> {
    Router::new().route("/v1/accesslogs", post(accesslogs))
}

#[derive(Debug, Deserialize)]
struct Params {
    workload: Option<String>,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn accesslogs(
    State(ctx): State<SourceContext>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let invalid = |status: StatusCode, reason: String| {
        ctx.ingest.telemetry().emit(RequestInvalid { receiver: Receiver::AccessLogHttp, reason: &reason });
        json_response(status, json!({ "error": reason }))
    };
    let proxy = match params.workload.as_deref().map(ProxyIdentity::from_workload_arg).transpose() {
        Ok(proxy) => proxy,
        Err(reason) => return invalid(StatusCode::BAD_REQUEST, format!("query parameter workload: {reason}")),
    };
    let bytes = match body::read(&headers, body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => return invalid(e.status(), e.to_string()),
    };
    let batch = match LineBatches::new(&bytes[..], LineParser::default(), proxy.as_ref(), &ctx.attributor.current())
        .next_batch(usize::MAX)
    {
        // Reading from memory cannot fail.
        Ok(batch) => batch.unwrap_or_default(),
        Err(e) => return invalid(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let errors: Vec<_> = batch
        .rejected
        .iter()
        .take(MAX_QUOTED_REJECTIONS)
        .map(|r| json!({ "line": r.item, "reason": r.reason }))
        .collect();
    let received = batch.received();
    match ctx.ingest.requests(Receiver::AccessLogHttp, Format::AccessLog, "line", started, batch).await {
        Ok(outcome) => json_response(
            StatusCode::OK,
            json!({ "received": received, "stored": outcome.stored, "rejected": outcome.rejected, "errors": errors }),
        ),
        Err(e) => {
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": format!("cannot store the data now, retry later: {}", e.source) }),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(e.retry_after.as_secs().max(1)));
            response
        }
    }
}
