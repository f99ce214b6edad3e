//! [`ApiError`]: every error a handler can return, and the one place they become HTTP responses, with the
//! body `{"error":{"code","message"}}` ([`ErrorBody`]). [`json_errors`] gives the same shape to the errors
//! that axum produces itself (unknown method, unreadable body, body too large).

use axum::Json;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to a client. Caller mistakes carry their reason; [`ApiError::Internal`] keeps its cause
/// for the server log and tells the client only that something failed, with the request id to quote.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed or invalid request: bad parameter, body or SQL. 400.
    #[error("{0}")]
    BadRequest(String),
    /// No or an unknown bearer token. 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role or namespace scope does not allow this. 403.
    #[error("{0}")]
    Forbidden(String),
    /// The named thing does not exist. 404.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method. 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body is larger than the API accepts. 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request is valid but its result exceeds a limit (rows, memory, time). 422.
    #[error("{0}")]
    LimitExceeded(String),
    /// Too many requests from this client. 429 with `Retry-After`.
    #[error("too many requests; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// The store is momentarily full or busy; retry later. 503.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the server, not of the request. 500; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `unsupported_media_type`, `limit_exceeded`,
    /// `rate_limited`, `unavailable`, `internal`.
    pub code: String,
    /// For people: what was wrong with the request. Internal errors say only that the server log (under
    /// the response's `x-request-id`) has the details.
    pub message: String,
}

impl ApiError {
    /// Wraps an unexpected failure; its text goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::LimitExceeded(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message } };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                // Logged inside the request's span, which carries its request id.
                tracing::error!(%cause, "internal error answering an API request");
                "internal error; the server log has the details under this response's x-request-id".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = error_response(status, code, message);
        match &self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_seconds } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}

/// Rewrites error responses that are not already JSON (axum's own rejections: 405 for an unknown method,
/// 400/415/413 from body extractors) into the API's error body, keeping their status and, for
/// rejections, their text.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are short; anything longer than this is not a message worth passing on.
    let text = axum::body::to_bytes(body, 4096).await.ok().and_then(|b| String::from_utf8(b.to_vec()).ok());
    let text = text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let (code, default) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed on this path"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported content type"),
        StatusCode::NOT_FOUND => ("not_found", "no such path"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "unauthorized"),
        StatusCode::FORBIDDEN => ("forbidden", "forbidden"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "bad request"),
    };
    // Server-side failures never pass their text on.
    let message =
        if status.is_server_error() { default.to_owned() } else { text.unwrap_or_else(|| default.to_owned()) };
    let mut rewritten = error_response(status, code, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}
