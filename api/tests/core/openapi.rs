//! The OpenAPI document is OpenAPI 3.1, lists every core path with its parameters and the bearer scheme,
//! and the interactive docs are served from the binary (no download).

use crate::common::{Backend, Env, call};
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_the_api() {
    let env = Env::new(Backend::Sqlite).await;
    let router = env.router();
    let answer = call(&router, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/graph",
        "/api/v1/mtls/coverage",
        "/api/v1/routes",
        "/api/v1/resilience/gaps",
        "/api/v1/recommendations",
        "/api/v1/findings",
        "/api/v1/config",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the document");
    }
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")), "{scheme}");
    let graph = &doc["paths"]["/api/v1/graph"]["get"];
    let names: Vec<&str> =
        graph["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["window", "start", "end", "namespace", "limit", "offset"]);
    for status in ["200", "400", "401", "403", "429", "500"] {
        assert!(graph["responses"][status].is_object(), "graph documents {status}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    let docs = call(&router, Method::GET, "/docs/", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&docs.body).contains("swagger"), "Swagger UI page");
    env.cleanup().await;
}

/// docs/openapi.json is the document the API serves, so the reference in the docs cannot drift from the
/// code. After changing an endpoint: `MESHLENS_BLESS=1 cargo test --workspace --test core openapi`.
#[test]
fn docs_openapi_json_is_the_served_document() {
    let served = serde_json::to_string_pretty(&meshlens_api::openapi::document()).expect("encode") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var_os("MESHLENS_BLESS").is_some() {
        std::fs::write(&path, &served).expect("write docs/openapi.json");
    }
    let in_docs = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        in_docs == served,
        "docs/openapi.json differs from the document the API serves; regenerate it with \
         MESHLENS_BLESS=1 cargo test --workspace --test core openapi"
    );
}
