//! [`ApiError`]: every error a handler can return, and the one place they become HTTP responses.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

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
    /// The request is valid but exceeds a limit (rows, memory, time, body size). 413/422 by kind are
    /// distinguished by the code; the status is 422.
    #[error("{0}")]
    LimitExceeded(String),
    /// Too many requests from this client. 429.
    #[error("{0}")]
    RateLimited(String),
    /// The store is momentarily full or busy; retry later. 503.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the server, not of the request. 500; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
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
            ApiError::LimitExceeded(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error answering an API request");
                "internal error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
