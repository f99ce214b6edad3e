//! `GET /api/v1/config/history`: the versions of the mesh configuration, newest first — when each came
//! into force, from where (`files` or `kube`), its content hash, and which resources it added, modified or
//! deleted — and `GET /api/v1/config/history/{id}` for one version. The version in force is
//! `MeshSnapshot::config_version`. Pages go by id: `?limit=N&before=ID`, the previous page's `next`.
//! A namespace-scoped caller sees only the changed resources of its namespace.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use meshlens_store::config_history::{ConfigHistory, ConfigVersion};
use serde::Deserialize;
use serde_json::{Value, json};

/// Versions per page unless `limit` says otherwise, and the most a page holds.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

pub fn routes() -> Router<AppState> {
    Router::new().route("/config/history", get(history)).route("/config/history/{id}", get(version))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Versions per page, 1 to 100. Default 20.
    limit: Option<u32>,
    /// Only versions older than this id (the `next` cursor of the previous page).
    before: Option<i64>,
}

/// `GET /api/v1/config/history`: the versions of the configuration in force, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/config/history",
    tag = "configuration",
    params(HistoryParams),
    responses(
        (status = 200, description = "`current` version id, `versions` (id, time, source, hash, changes) and the \
                                      `next` page's path", body = Object),
        crate::v1::ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}, found {limit}")));
    }
    let history = ConfigHistory::new(state.store.catalog().clone());
    let versions = history.list(limit, params.before).await.map_err(ApiError::internal)?;
    let next = versions
        .last()
        .filter(|_| versions.len() == limit as usize)
        .map(|oldest| format!("/api/v1/config/history?limit={limit}&before={}", oldest.id));
    let versions: Vec<Value> = versions.into_iter().map(|v| scoped(v, &caller)).collect();
    Ok(Json(json!({
        "current": state.mesh().config_version,
        "versions": versions,
        "next": next,
    })))
}

/// `GET /api/v1/config/history/{id}`: one version with its changes.
#[utoipa::path(
    get,
    path = "/api/v1/config/history/{id}",
    tag = "configuration",
    params(("id" = i64, Path, description = "The version id")),
    responses(
        (status = 200, description = "The version", body = Object),
        (status = 404, description = "No such version", body = crate::ErrorBody),
        crate::v1::ErrorResponses
    ),
    security(("bearer" = []))
)]
pub async fn version(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let history = ConfigHistory::new(state.store.catalog().clone());
    match history.get(id).await.map_err(ApiError::internal)? {
        Some(version) => Ok(Json(scoped(version, &caller))),
        None => Err(ApiError::NotFound(format!("no config version {id}"))),
    }
}

/// A version as JSON, its changes reduced to the caller's namespace when the caller is scoped.
fn scoped(mut version: ConfigVersion, caller: &Caller) -> Value {
    if let Some(namespace) = &caller.namespace {
        let in_scope = |key: &String| key_namespace(key) == Some(namespace.as_str());
        for keys in [&mut version.changes.added, &mut version.changes.modified, &mut version.changes.deleted] {
            keys.retain(in_scope);
        }
    }
    json!({
        "id": version.id,
        "recorded_at": version.recorded_at,
        "source": version.source,
        "content_hash": version.content_hash,
        "resource_count": version.resource_count,
        "added": version.changes.added,
        "modified": version.changes.modified,
        "deleted": version.changes.deleted,
    })
}

/// The namespace of a resource key `Kind namespace/name` (`None` for cluster-scoped `Kind name`).
fn key_namespace(key: &str) -> Option<&str> {
    let (_kind, object) = key.split_once(' ')?;
    object.split_once('/').map(|(namespace, _)| namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_namespace() {
        assert_eq!(key_namespace("VirtualService bookinfo/reviews"), Some("bookinfo"));
        assert_eq!(key_namespace("Namespace bookinfo"), None);
    }
}
