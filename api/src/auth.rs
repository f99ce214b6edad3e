//! Who is calling: the [`Caller`] a bearer token resolves to, with its [`Role`] and optional namespace
//! scope, and the middleware that resolves it. Handlers take `Extension<Caller>`; a scoped caller never
//! sees another namespace's data ([`Caller::scope`] turns the request's `namespace` parameter into the
//! namespace to filter by).
//!
//! No token, an unknown one or a revoked one is 401; a role too weak for the route is 403
//! ([`Caller::require_admin`]). With authentication off (`meshlens serve --insecure-no-auth`, loopback
//! only) every request is an unscoped admin.

use crate::error::ApiError;
use crate::limits::RateLimiter;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use utoipa::ToSchema;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read every analysis, chart, report and the SQL endpoint.
    Viewer,
    /// Also manage schedules, tokens and the configuration.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (expected viewer or admin)")),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// `Some(ns)`: only data of namespace `ns` (records whose source or destination is in it, resources in
    /// it).
    pub namespace: Option<String>,
}

impl Caller {
    /// Whoever calls when authentication is off (`--insecure-no-auth`): an unscoped admin.
    pub fn unrestricted() -> Self {
        Caller { role: Role::Admin, namespace: None }
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Viewer => Err(ApiError::Forbidden("this operation needs a token with role admin".into())),
        }
    }

    /// The namespace a request may see, from what it asked for (`requested`, the `namespace` parameter):
    /// a scoped caller gets its own namespace whether it names it or not, and 403 for any other; an
    /// unscoped caller gets what it asked for (`None`: everything).
    pub fn scope(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        match (&self.namespace, requested) {
            (None, requested) => Ok(requested.map(str::to_owned)),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(requested)) if own == requested => Ok(Some(own.clone())),
            (Some(own), Some(requested)) => Err(ApiError::Forbidden(format!(
                "this token is scoped to namespace {own:?} and cannot read namespace {requested:?}"
            ))),
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Bearer tokens from the `api_tokens` table.
    Tokens(crate::tokens::Tokens),
    /// Everyone is [`Caller::unrestricted`]. Only for a server bound to loopback.
    Disabled,
}

/// The bearer token of a request, if it sent an `Authorization: Bearer` header.
fn bearer(request: &Request) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get(http::header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::Unauthorized("the Authorization header must be `Bearer TOKEN`".into())),
    }
}

/// Who the rate limit counts a request against before its token is known: the client's address.
fn client_key(request: &Request) -> String {
    match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
        None => "ip:unknown".to_owned(),
    }
}

/// Resolves the [`Caller`] of every API request and applies the rate limit: per token once the token is
/// known, per client address for requests without a valid token (so guessing tokens is slow too).
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let limiter: &RateLimiter = &state.limits().rate_limiter;
    let caller = match state.auth_mode() {
        AuthMode::Disabled => {
            if let Err(e) = limiter.check(&client_key(&request)) {
                return e.into_response();
            }
            Caller::unrestricted()
        }
        AuthMode::Tokens(tokens) => {
            let resolved = match bearer(&request) {
                Ok(Some(secret)) => tokens.authenticate(secret).await.map_err(ApiError::internal),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match resolved {
                Ok(Some(token)) => {
                    if let Err(e) = limiter.check(&format!("token:{}", token.id)) {
                        return e.into_response();
                    }
                    token.caller()
                }
                Ok(None) | Err(ApiError::Unauthorized(_)) => {
                    if let Err(e) = limiter.check(&client_key(&request)) {
                        return e.into_response();
                    }
                    let reason = match bearer(&request) {
                        Ok(None) => "missing bearer token (send `Authorization: Bearer TOKEN`)".to_owned(),
                        Ok(Some(_)) => "unknown or revoked token".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    return ApiError::Unauthorized(reason).into_response();
                }
                Err(e) => return e.into_response(),
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}
