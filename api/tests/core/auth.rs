//! Authentication, roles and namespace scope, on SQLite and on PostgreSQL; the rate and body limits; and
//! internal errors that reach the log but not the client.

use crate::common::{Backend, Env, call, get};
use crate::on_both_backends;
use http::{Method, StatusCode};
use meshlens_api::{ApiLimits, Role};
use serde_json::{Value, json};
use std::collections::BTreeSet;

on_both_backends!(
    no_token_or_a_bad_one_is_401,
    a_revoked_token_is_401,
    token_management_needs_an_unscoped_admin,
    a_scoped_token_sees_only_its_namespace,
);

async fn no_token_or_a_bad_one_is_401(backend: Backend) {
    let env = Env::new(backend).await;
    let router = env.router();
    let fake = format!("mlk_{}", "0".repeat(64));
    for (header, why) in [
        (None, "missing bearer token"),
        (Some("Bearer nonsense".to_owned()), "unknown or revoked token"),
        (Some(format!("Bearer {fake}")), "unknown or revoked token"),
        (Some("Basic dXNlcjpwYXNz".to_owned()), "must be `Bearer TOKEN`"),
    ] {
        let mut request = http::Request::builder().uri("/api/v1/graph");
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        let answer = {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let response = router.clone().oneshot(request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
            crate::common::Answer { status, headers, body }
        };
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(answer.error_code(), "unauthorized");
        assert!(answer.message().contains(why), "{header:?}: {}", answer.message());
        assert_eq!(answer.headers.get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    }
    // The document and the docs need no token.
    let answer = call(&router, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    env.cleanup().await;
}

async fn a_revoked_token_is_401(backend: Backend) {
    let env = Env::new(backend).await;
    let router = env.router();
    let tokens = env.tokens();
    let created = tokens.create(Role::Viewer, None, "ci").await.unwrap();
    assert_eq!(get(&router, "/api/v1/config", &created.secret).await.status, StatusCode::OK);
    let listed = tokens.list().await.unwrap();
    let used = listed.iter().find(|t| t.id == created.info.id).unwrap();
    assert!(used.last_used_at.is_some(), "use is noted: {used:?}");
    tokens.revoke(created.info.id).await.unwrap();
    let answer = get(&router, "/api/v1/config", &created.secret).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(tokens.revoke(created.info.id).await.is_err(), "revoking twice is refused");
    env.cleanup().await;
}

async fn token_management_needs_an_unscoped_admin(backend: Backend) {
    let env = Env::new(backend).await;
    let router = env.router();
    let viewer = env.token(Role::Viewer, None).await;
    let scoped_admin = env.token(Role::Admin, Some("shop")).await;
    let admin = env.token(Role::Admin, None).await;
    for token in [&viewer, &scoped_admin] {
        let answer = call(&router, Method::GET, "/api/v1/tokens", Some(token), None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(answer.error_code(), "forbidden");
        let body = json!({"role": "admin"});
        let answer = call(&router, Method::POST, "/api/v1/tokens", Some(token), Some(body)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }

    let body = json!({"role": "viewer", "namespace": "shop", "name": "grafana"});
    let answer = call(&router, Method::POST, "/api/v1/tokens", Some(&admin), Some(body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&answer.body));
    let created = answer.json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mlk_") && secret.len() == 68, "{secret}");
    assert_eq!(created["token"]["namespace"], "shop");
    assert_eq!(get(&router, "/api/v1/graph", &secret).await.json()["namespace"], "shop");

    let list = get(&router, "/api/v1/tokens", &admin).await;
    assert_eq!(list.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&list.body).to_string();
    assert!(!text.contains(&secret) && !text.contains(&admin), "no secrets in the list");
    assert_eq!(list.json()["total"], 4);

    let id = created["token"]["id"].as_i64().unwrap();
    let answer = call(&router, Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&admin), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json()["revoked_at"].is_string());
    assert_eq!(get(&router, "/api/v1/graph", &secret).await.status, StatusCode::UNAUTHORIZED);
    let answer = call(&router, Method::DELETE, "/api/v1/tokens/999999", Some(&admin), None).await;
    assert_eq!((answer.status, answer.error_code().as_str()), (StatusCode::NOT_FOUND, "not_found"));

    // Bodies of the wrong shape are client errors in the API's error shape.
    for body in
        [json!({"role": "root"}), json!({"role": "viewer", "extra": 1}), json!({"role": "viewer", "namespace": "Bad!"})]
    {
        let answer = call(&router, Method::POST, "/api/v1/tokens", Some(&admin), Some(body.clone())).await;
        assert!(answer.status.is_client_error(), "{body}: {}", answer.status);
        answer.error_code();
    }
    env.cleanup().await;
}

fn namespaces_of(items: &Value, fields: &[&str]) -> Vec<BTreeSet<String>> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| fields.iter().filter_map(|f| item[*f].as_str().map(str::to_owned)).collect())
        .collect()
}

async fn a_scoped_token_sees_only_its_namespace(backend: Backend) {
    let env = Env::new(backend).await;
    let router = env.router();
    let shop = env.token(Role::Viewer, Some("shop")).await;

    // Only edges with an end in shop: web → api.shop and web → ratings.default, not productpage → reviews.
    let graph = get(&router, "/api/v1/graph", &shop).await.json();
    assert_eq!(graph["namespace"], "shop");
    assert_eq!(graph["total"], 2, "{graph}");
    for ends in namespaces_of(&graph["items"], &["source_namespace", "destination_namespace"]) {
        assert!(ends.contains("shop"), "{graph}");
    }
    let text = graph.to_string();
    assert!(!text.contains("productpage") && !text.contains("reviews"), "{text}");

    let mtls = get(&router, "/api/v1/mtls/coverage", &shop).await.json();
    assert_eq!(mtls["overall"]["requests"], 50, "{mtls}");
    assert!(mtls["namespaces"].as_array().unwrap().iter().all(|n| n["namespace"] == "shop"), "{mtls}");

    // Naming its own namespace is fine; another is 403.
    assert_eq!(get(&router, "/api/v1/graph?namespace=shop", &shop).await.status, StatusCode::OK);
    for path in ["/api/v1/graph", "/api/v1/findings", "/api/v1/config", "/api/v1/routes"] {
        let answer = get(&router, &format!("{path}?namespace=default"), &shop).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert!(answer.message().contains("scoped to namespace \"shop\""), "{}", answer.message());
    }

    // Config and findings of `default` (the samples) stay hidden; its traffic findings too.
    let config = get(&router, "/api/v1/config", &shop).await.json();
    assert_eq!(
        (config["total"].as_u64(), config["counts"].as_object().map(|c| c.len())),
        (Some(0), Some(0)),
        "{config}"
    );
    let findings = get(&router, "/api/v1/findings", &shop).await.json();
    for item in findings["items"].as_array().unwrap() {
        assert!(
            item["resource"].as_str().unwrap().contains(" shop/") || item["resource"] == "Namespace shop",
            "{item}"
        );
    }
    assert!(
        findings["items"].as_array().unwrap().iter().any(|f| f["code"] == "ML2002"),
        "plaintext into shop: {findings}"
    );
    let routes = get(&router, "/api/v1/routes", &shop).await.json();
    assert_eq!(routes["total"], 0, "bookinfo's routes are not shop's: {routes}");
    let recommendations = get(&router, "/api/v1/recommendations", &shop).await.json();
    assert!(!recommendations.to_string().contains("default/"), "{recommendations}");

    // The samples name no namespace: they are in `default`, and a token of `default` sees them.
    let default = env.token(Role::Viewer, Some("default")).await;
    let config = get(&router, "/api/v1/config", &default).await.json();
    assert!(config["total"].as_u64().unwrap() > 10, "{config}");
    assert!(config["items"].as_array().unwrap().iter().all(|r| r["namespace"] == "default"));
    let routes = get(&router, "/api/v1/routes", &default).await.json();
    assert_eq!(routes["total"], 2, "{routes}");

    // An unscoped token filtering by namespace gets the same view.
    let viewer = env.token(Role::Viewer, None).await;
    let filtered = get(&router, "/api/v1/graph?namespace=shop", &viewer).await.json();
    assert_eq!(filtered["items"], graph["items"]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after() {
    let env = Env::new(Backend::Sqlite).await;
    let limits = ApiLimits { requests_per_second: 0.01, burst: 3, ..ApiLimits::default() };
    let router = meshlens_api::router(env.state.clone().with_limits(limits));
    let token = env.token(Role::Viewer, None).await;
    for _ in 0..3 {
        assert_eq!(get(&router, "/api/v1/config", &token).await.status, StatusCode::OK);
    }
    let answer = get(&router, "/api/v1/config", &token).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.error_code(), "rate_limited");
    let retry: u64 = answer.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Another token has its own bucket.
    let other = env.token(Role::Viewer, None).await;
    assert_eq!(get(&router, "/api/v1/config", &other).await.status, StatusCode::OK);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413() {
    let env = Env::new(Backend::Sqlite).await;
    let limits = ApiLimits { body_bytes: 1024, ..ApiLimits::default() };
    let router = meshlens_api::router(env.state.clone().with_limits(limits));
    let admin = env.token(Role::Admin, None).await;
    let body = json!({"role": "viewer", "name": "x".repeat(4096)});
    let answer = call(&router, Method::POST, "/api/v1/tokens", Some(&admin), Some(body)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "payload_too_large");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_do_not_leak_and_carry_the_request_id() {
    let env = Env::new(Backend::Sqlite).await;
    let router = env.router();
    let token = env.token(Role::Viewer, None).await;
    // The catalog database goes away under the API: the token lookup fails inside the server.
    env.store.catalog().close().await;
    let mut request = http::Request::builder().uri("/api/v1/config").header("authorization", format!("Bearer {token}"));
    request = request.header("x-request-id", "trace-me-42");
    let response = {
        use tower::ServiceExt;
        router.clone().oneshot(request.body(axum::body::Body::empty()).unwrap()).await.unwrap()
    };
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers().get("x-request-id").unwrap(), "trace-me-42", "the client's id is kept");
    let body = {
        use http_body_util::BodyExt;
        response.into_body().collect().await.unwrap().to_bytes()
    };
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["code"], "internal");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(!message.to_lowercase().contains("pool") && !message.contains("sqlite"), "{message}");
    assert!(message.contains("x-request-id"), "{message}");
}
