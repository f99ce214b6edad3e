//! `GET /api/v1/config`: the mesh configuration in force — its resources (kind, namespace, name and the
//! file they came from), counts by kind, documents skipped for being of kinds meshlens does not model,
//! and what failed to load, with its location.

use super::ErrorResponses;
use crate::analysis::resource_namespace;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{self, NamespaceDoc, Page, PageDoc, Params};
use crate::state::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use http::Uri;
use meshlens_model::mesh::Kind;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Where a resource was loaded from.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceOrigin {
    pub file: String,
    /// 1-based index of the document within the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigResource {
    /// `VirtualService`, `DestinationRule`, `Service`, ...
    pub kind: String,
    /// The namespace the resource lives in (`default` when its document named none); `null` for
    /// cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
    /// `Kind namespace/name`, as findings name it.
    pub reference: String,
    pub origin: ResourceOrigin,
}

/// A document or file that could not be loaded.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoadError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// 1-based document index; `null` for file-level problems.
    pub document: Option<usize>,
    /// `Kind namespace/name` when the document got far enough to say.
    pub resource: Option<String>,
    /// Field path within the document, e.g. `spec.http[0].timeout`.
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigResponse {
    pub namespace: Option<String>,
    /// Resources in load order.
    pub items: Vec<ConfigResource>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
    /// Resources (of all pages, before the `kind` filter) by kind.
    pub counts: BTreeMap<String, u64>,
    /// Documents of kinds meshlens does not model, by `apiVersion kind`.
    pub skipped: BTreeMap<String, u64>,
    pub errors: Vec<LoadError>,
    /// The config history version in force (`/api/v1/config/history`), once recorded.
    pub config_version: Option<i64>,
}

/// Parameters of `/config` besides the namespace and page (OpenAPI only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // only read by the OpenAPI derive
pub struct ConfigDoc {
    /// Only resources of these kinds (comma-separated), e.g. `VirtualService,DestinationRule`.
    #[param(example = "VirtualService")]
    pub kind: Option<String>,
}

/// The mesh configuration in force.
#[utoipa::path(
    get,
    path = "/api/v1/config",
    tag = "configuration",
    params(NamespaceDoc, PageDoc, ConfigDoc),
    responses((status = 200, description = "The configuration in force", body = ConfigResponse), ErrorResponses),
    security(("bearer" = []))
)]
pub async fn config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Json<ConfigResponse>, ApiError> {
    let params = Params::parse(&uri, &["namespace", "kind", "limit", "offset"])?;
    let namespace = params::namespace(&params, &caller)?;
    let page = Page::from_params(&params, &state.limits().config)?;
    let kinds = params
        .list("kind")
        .into_iter()
        .map(|k| {
            Kind::ALL.into_iter().find(|kind| kind.as_str() == k).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::BadRequest(format!("kind: unknown kind {k:?} (expected one of {})", known.join(", ")))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shows = |ns: Option<&str>| namespace.as_deref().is_none_or(|scope| ns == Some(scope));

    let snapshot = state.mesh();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut resources = Vec::new();
    for loaded in &snapshot.report.resources {
        let kind = loaded.resource.kind();
        let meta = loaded.resource.metadata();
        let resource_namespace = if kind.is_namespaced() { Some(meta.ns()) } else { None };
        // A Namespace object belongs to the namespace it names.
        let owner = resource_namespace.or((kind == Kind::Namespace).then_some(meta.name.as_str()));
        if !shows(owner) {
            continue;
        }
        *counts.entry(kind.as_str().to_owned()).or_default() += 1;
        if !kinds.is_empty() && !kinds.contains(&kind) {
            continue;
        }
        resources.push(ConfigResource {
            kind: kind.as_str().to_owned(),
            namespace: resource_namespace.map(str::to_owned),
            name: meta.name.clone(),
            reference: loaded.resource.reference(),
            origin: ResourceOrigin {
                file: loaded.origin.file.clone(),
                document: loaded.origin.document,
                line: loaded.origin.line,
            },
        });
    }
    // A scoped caller sees only errors it can place in its namespace; file-level errors name no resource.
    let errors = snapshot
        .report
        .errors
        .iter()
        .filter(|e| namespace.is_none() || shows(e.resource.as_deref().and_then(resource_namespace)))
        .map(|e| LoadError {
            file: e.file.clone(),
            line: e.line,
            column: e.column,
            document: e.document,
            resource: e.resource.clone(),
            field: e.field.clone(),
            message: e.message.clone(),
        })
        .collect();
    let skipped = if namespace.is_none() {
        snapshot.report.skipped_by_type().into_iter().map(|(t, n)| (t, n as u64)).collect()
    } else {
        BTreeMap::new()
    };
    let (items, total) = page.slice(resources);
    Ok(Json(ConfigResponse {
        namespace,
        items,
        total,
        limit: page.limit,
        offset: page.offset,
        counts,
        skipped,
        errors,
        config_version: snapshot.config_version,
    }))
}
