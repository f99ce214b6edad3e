//! OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`, binary protobuf (`application/x-protobuf`) or JSON
//! (`application/json`), optionally gzip-compressed. Responses use the request's encoding; errors carry a
//! `google.rpc.Status` as the specification asks.

use super::convert;
use crate::formats::LineParser;
use crate::ingest::{IngestError, Outcome};
use crate::internal_events::{Format, Receiver, RequestInvalid};
use crate::sources::SourceContext;
use crate::sources::body::{self, MAX_BODY_BYTES};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Instant;

/// The OTLP/HTTP routes, for the HTTP listener's router.
pub fn routes() -> Router<SourceContext> {
    Router::new().route("/v1/traces", post(traces)).route("/v1/logs", post(logs))
}

/// The two encodings OTLP/HTTP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Option<Encoding> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if media_type.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    fn decode<M: Message + Default + DeserializeOwned>(self, bytes: &[u8]) -> Result<M, String> {
        match self {
            Encoding::Protobuf => M::decode(bytes).map_err(|e| e.to_string()),
            Encoding::Json => serde_json::from_slice(bytes).map_err(|e| format!("invalid OTLP JSON: {e}")),
        }
    }

    fn reply<M: Message + Serialize>(self, status: StatusCode, message: &M) -> Response {
        let body = match self {
            Encoding::Protobuf => message.encode_to_vec(),
            // Serializing generated OTLP types to a Vec cannot fail (no maps with non-string keys).
            Encoding::Json => serde_json::to_vec(message).unwrap_or_default(),
        };
        (status, [(header::CONTENT_TYPE, self.content_type())], body).into_response()
    }

    /// An error response: `google.rpc.Status` in protobuf, or its JSON form.
    fn error(self, status: StatusCode, code: tonic::Code, message: String) -> Response {
        match self {
            Encoding::Protobuf => {
                let body = RpcStatus { code: code as i32, message, details: Vec::new() }.encode_to_vec();
                (status, [(header::CONTENT_TYPE, self.content_type())], body).into_response()
            }
            Encoding::Json => {
                let body = serde_json::json!({ "code": code as i32, "message": message }).to_string();
                (status, [(header::CONTENT_TYPE, self.content_type())], body).into_response()
            }
        }
    }
}

/// Reads and decodes a request body, or answers why not (400, 413, 415), counting the failure.
async fn decode<M: Message + Default + DeserializeOwned>(
    ctx: &SourceContext,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Encoding, M), Response> {
    let invalid = |encoding: Encoding, status: StatusCode, code: tonic::Code, reason: String| {
        ctx.ingest.telemetry().emit(RequestInvalid { receiver: Receiver::OtlpHttp, reason: &reason });
        encoding.error(status, code, reason)
    };
    let Some(encoding) = Encoding::of(headers) else {
        let reason = "content-type must be application/x-protobuf or application/json".to_owned();
        return Err(invalid(Encoding::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, tonic::Code::InvalidArgument, reason));
    };
    let bytes = match body::read(headers, body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                tonic::Code::ResourceExhausted
            } else {
                tonic::Code::InvalidArgument
            };
            return Err(invalid(encoding, e.status(), code, e.to_string()));
        }
    };
    match encoding.decode(&bytes) {
        Ok(message) => Ok((encoding, message)),
        Err(reason) => Err(invalid(encoding, StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, reason)),
    }
}

/// 503 with `Retry-After`: OTLP/HTTP clients retry 503 and honour the header.
fn retry_later(encoding: Encoding, error: &IngestError) -> Response {
    let mut response = encoding.error(
        StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::Unavailable,
        format!("cannot store the data now, retry later: {}", error.source),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(error.retry_after.as_secs().max(1)));
    response
}

async fn traces(State(ctx): State<SourceContext>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let (encoding, request) = match decode::<ExportTraceServiceRequest>(&ctx, &headers, body).await {
        Ok(decoded) => decoded,
        Err(response) => return response,
    };
    match ctx.ingest.spans(Receiver::OtlpHttp, started, convert::spans(request)).await {
        Ok(Outcome { rejected, message, .. }) => {
            let partial_success = message
                .map(|error_message| ExportTracePartialSuccess { rejected_spans: rejected as i64, error_message });
            encoding.reply(StatusCode::OK, &ExportTraceServiceResponse { partial_success })
        }
        Err(e) => retry_later(encoding, &e),
    }
}

async fn logs(State(ctx): State<SourceContext>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let (encoding, request) = match decode::<ExportLogsServiceRequest>(&ctx, &headers, body).await {
        Ok(decoded) => decoded,
        Err(response) => return response,
    };
    let batch = convert::requests(request, LineParser::default(), &ctx.attributor.current());
    match ctx.ingest.requests(Receiver::OtlpHttp, Format::OtlpLogs, "log record", started, batch).await {
        Ok(Outcome { rejected, message, .. }) => {
            let partial_success = message
                .map(|error_message| ExportLogsPartialSuccess { rejected_log_records: rejected as i64, error_message });
            encoding.reply(StatusCode::OK, &ExportLogsServiceResponse { partial_success })
        }
        Err(e) => retry_later(encoding, &e),
    }
}
