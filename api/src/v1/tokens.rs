//! `/api/v1/tokens`: token management over HTTP, for unscoped admins only (a scoped admin must not mint
//! tokens beyond its namespace). `GET` lists (no secrets), `POST` creates and returns the secret once,
//! `DELETE /tokens/{id}` revokes.

use super::ErrorResponses;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::params::{Page, PageDoc, Params};
use crate::state::AppState;
use crate::tokens::{TokenError, TokenInfo, Tokens};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn require_token_admin(state: &AppState, caller: &Caller) -> Result<Tokens, ApiError> {
    caller.require_admin()?;
    if let Some(namespace) = &caller.namespace {
        return Err(ApiError::Forbidden(format!(
            "tokens are managed by unscoped admins; this token is scoped to namespace {namespace:?}"
        )));
    }
    match state.auth_mode() {
        crate::auth::AuthMode::Tokens(tokens) => Ok(tokens.clone()),
        crate::auth::AuthMode::Disabled => Ok(Tokens::new(state.store.catalog().clone())),
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Invalid(reason) => ApiError::BadRequest(reason),
        TokenError::NotFound(_) => ApiError::NotFound(e.to_string()),
        TokenError::AlreadyRevoked(_) => ApiError::BadRequest(e.to_string()),
        other => ApiError::internal(other),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub role: Role,
    /// Restrict the token to this namespace's data.
    pub namespace: Option<String>,
    /// A label to recognize it by.
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: TokenInfo,
    /// The bearer token. Shown this once; only its hash is stored.
    pub secret: String,
}

/// Every token, revoked ones included; never their secrets. Unscoped admins only.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    params(PageDoc),
    responses((status = 200, description = "Tokens, oldest first", body = TokenList), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<TokenList>, ApiError> {
    let params = Params::parse(&uri, &["limit", "offset"])?;
    let page = Page::from_params(&params, &state.limits().config)?;
    let tokens = require_token_admin(&state, &caller)?;
    let (items, total) = page.slice(tokens.list().await.map_err(token_error)?);
    Ok(Json(TokenList { items, total, limit: page.limit, offset: page.offset }))
}

/// Creates a token and returns its secret, once. Unscoped admins only.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The new token and its secret", body = CreatedToken),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let tokens = require_token_admin(&state, &caller)?;
    let created = tokens.create(body.role, body.namespace.as_deref(), &body.name).await.map_err(token_error)?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token: created.info, secret: created.secret })))
}

/// Revokes a token: requests with it are refused from then on. Unscoped admins only.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = i64, Path, description = "The token's id")),
    responses(
        (status = 200, description = "The revoked token", body = TokenInfo),
        (status = 404, description = "No such token", body = ErrorBody),
        ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<Json<TokenInfo>, ApiError> {
    let tokens = require_token_admin(&state, &caller)?;
    Ok(Json(tokens.revoke(id).await.map_err(token_error)?))
}
