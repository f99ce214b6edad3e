//! The OpenAPI 3.1 document of the API, generated from the handlers' `#[utoipa::path]` annotations and the
//! response types' `ToSchema` derives, so it cannot drift from the code. Served at
//! `/api/v1/openapi.json` and rendered by Swagger UI at `/docs`. Every module lists its paths here.

use crate::v1;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "meshlens API",
        description = "Service-mesh analyses over stored telemetry and the mesh configuration in force: service \
                       graph, mTLS coverage, route usage, resilience gaps, recommendations, findings. Every \
                       `/api/v1` path except this document needs `Authorization: Bearer TOKEN` (`meshlens token \
                       create`). Errors are `{\"error\":{\"code\",\"message\"}}`. See docs/api.md."
    ),
    paths(
        v1::graph::graph,
        v1::mtls::coverage,
        v1::routes::routes,
        v1::resilience::gaps,
        v1::recommendations::recommendations,
        v1::findings::findings,
        v1::config::config,
        v1::tokens::list,
        v1::tokens::create,
        v1::tokens::revoke,
        crate::reports::api::create, crate::reports::api::list, crate::reports::api::fetch,
        crate::schedules::list, crate::schedules::create, crate::schedules::fetch, crate::schedules::remove,
        crate::config_history::history, crate::config_history::version,
        crate::sql::query,
        crate::charts::mtls_coverage, crate::charts::requests, crate::charts::latency, crate::charts::split_drift,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "analyses", description = "Analyses of the traffic in a time window against the configuration"),
        (name = "configuration", description = "The mesh configuration in force"),
        (name = "tokens", description = "API tokens (unscoped admins only)"),
        (name = "reports", description = "Compliance reports, their history and schedules (docs/reports.md)"),
        (name = "sql", description = "Read-only SQL over the stored telemetry"),
        (name = "charts", description = "Charts of the stored telemetry, SVG or PNG"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `meshlens token create`"))
                    .build(),
            ),
        );
    }
}

/// The API's OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
