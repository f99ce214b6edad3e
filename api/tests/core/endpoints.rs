//! Every analysis endpoint answers with the numbers of the stored traffic, in the page envelope, and every
//! bad parameter is a 400 that names it.

use crate::common::{Backend, Env, call, get};
use http::{Method, StatusCode};
use meshlens_api::Role;
use serde_json::Value;

const ENDPOINTS: [&str; 7] = [
    "/api/v1/graph",
    "/api/v1/mtls/coverage",
    "/api/v1/routes",
    "/api/v1/resilience/gaps",
    "/api/v1/recommendations",
    "/api/v1/findings",
    "/api/v1/config",
];

fn edge<'a>(items: &'a Value, source: &str, destination: &str) -> &'a Value {
    items
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["source"] == source && e["destination"] == destination)
        .unwrap_or_else(|| panic!("no edge {source} -> {destination} in {items}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_a_page_with_a_request_id() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.token(Role::Viewer, None).await;
    let router = env.router();
    for path in ENDPOINTS {
        let answer = get(&router, path, &token).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&answer.body));
        let json = answer.json();
        assert!(json["items"].is_array(), "{path}: {json}");
        assert!(json["total"].as_u64().is_some(), "{path}: {json}");
        assert_eq!(json["limit"], 100, "{path}: default page size");
        assert_eq!(json["offset"], 0, "{path}");
        assert!(json["items"].as_array().unwrap().len() as u64 <= json["total"].as_u64().unwrap());
        let id = answer.headers.get("x-request-id").expect("x-request-id").to_str().unwrap();
        assert!(id.len() >= 32, "{path}: request id {id:?}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_has_rates_errors_latency_and_mtls_per_edge() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.token(Role::Viewer, None).await;
    let router = env.router();
    let json = get(&router, "/api/v1/graph?window=1h", &token).await.json();
    assert_eq!(json["total"], 4, "{json}");
    let items = &json["items"];
    // Busiest first: the paired productpage → reviews requests count once each.
    assert_eq!(items[0]["source"], "default/productpage-v1");
    let reviews = edge(items, "default/productpage-v1", "reviews.default.svc.cluster.local");
    assert_eq!(reviews["requests"], 200);
    assert_eq!(reviews["errors"], 20);
    assert_eq!(reviews["error_rate"], 0.1);
    assert_eq!(reviews["mtls"]["mutual"], 200, "the server's verdict settles the client's unknown");
    assert_eq!(reviews["mtls_share"], 1.0);
    let rate = reviews["rate"].as_f64().unwrap();
    assert!((rate - 200.0 / 3600.0).abs() < 0.001, "rate {rate}");
    // Durations 1..=200 ms: the approximate percentiles land near 100, 190 and 198.
    let p50 = reviews["p50_ms"].as_f64().unwrap();
    let p99 = reviews["p99_ms"].as_f64().unwrap();
    assert!((95.0..=106.0).contains(&p50), "p50 {p50}");
    assert!((190.0..=201.0).contains(&p99), "p99 {p99}");
    let shop = edge(items, "shop/web", "api.shop.svc.cluster.local");
    assert_eq!(shop["mtls"]["plaintext"], 40);
    assert_eq!(shop["mtls_share"], 0.0);
    let nodes = json["nodes"].as_array().unwrap();
    let ratings = nodes.iter().find(|n| n["id"] == "ratings.default.svc.cluster.local").expect("ratings node");
    assert_eq!(ratings["kind"], "service");
    assert_eq!(ratings["requests_in"], 60);
    let web = nodes.iter().find(|n| n["id"] == "shop/web").expect("web node");
    assert_eq!((web["kind"].as_str(), web["requests_out"].as_u64()), (Some("workload"), Some(50)));

    // A window before the traffic has none.
    let json = get(&router, "/api/v1/graph?window=1h&end=2020-01-01T00:00:00Z", &token).await.json();
    assert_eq!(json["total"], 0);
    assert_eq!(json["window"]["start"], "2019-12-31T23:00:00Z");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_consistent() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.token(Role::Viewer, None).await;
    let router = env.router();
    let all = get(&router, "/api/v1/graph", &token).await.json()["items"].clone();
    let mut paged = Vec::new();
    for offset in 0..5 {
        let json = get(&router, &format!("/api/v1/graph?limit=1&offset={offset}"), &token).await.json();
        assert_eq!((json["total"].as_u64(), json["limit"].as_u64()), (Some(4), Some(1)));
        paged.extend(json["items"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(Value::Array(paged), all);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyses_show_the_stored_traffic_and_the_samples() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.token(Role::Viewer, None).await;
    let router = env.router();

    let mtls = get(&router, "/api/v1/mtls/coverage", &token).await.json();
    assert_eq!(mtls["overall"]["requests"], 300, "{mtls}");
    assert_eq!(mtls["overall"]["plaintext"], 40);
    let at_risk = get(&router, "/api/v1/mtls/coverage?classification=at_risk", &token).await.json();
    assert_eq!(at_risk["total"], 1, "{at_risk}");
    assert_eq!(at_risk["items"][0]["destination"], "api.shop.svc.cluster.local");

    let routes = get(&router, "/api/v1/routes", &token).await.json();
    let reviews = routes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "VirtualService reviews")
        .unwrap_or_else(|| panic!("reviews route in {routes}"));
    assert_eq!(reviews["requests"], 200, "{reviews}");
    let unused = get(&router, "/api/v1/routes?unused=true", &token).await.json();
    assert!(unused["items"].as_array().unwrap().iter().all(|r| r["requests"] == 0), "{unused}");

    let gaps = get(&router, "/api/v1/resilience/gaps", &token).await.json();
    assert!(gaps["items"].as_array().unwrap().iter().any(|s| s["service"] == "reviews.default.svc.cluster.local"));
    let only = get(&router, "/api/v1/resilience/gaps?only_gaps=true", &token).await.json();
    assert!(only["items"].as_array().unwrap().iter().all(|s| !s["gaps"].as_array().unwrap().is_empty()));
    assert_eq!(only["total"], gaps["services_with_gaps"]);

    let recommendations = get(&router, "/api/v1/recommendations?kind=timeout", &token).await.json();
    for r in recommendations["items"].as_array().unwrap() {
        assert_eq!(r["kind"], "timeout");
        assert!(r["patch"].as_str().unwrap().contains("kind: VirtualService"), "{r}");
    }

    let findings = get(&router, "/api/v1/findings", &token).await.json();
    let items = findings["items"].as_array().unwrap();
    assert!(items.iter().any(|f| f["source"] == "traffic" && f["code"] == "ML2002"), "plaintext into shop: {findings}");
    let counts = &findings["counts"];
    let sum =
        counts["error"].as_u64().unwrap() + counts["warning"].as_u64().unwrap() + counts["info"].as_u64().unwrap();
    assert_eq!(sum, findings["total"].as_u64().unwrap());
    let errors = get(&router, "/api/v1/findings?level=error&source=traffic", &token).await.json();
    assert!(errors["items"].as_array().unwrap().iter().all(|f| f["level"] == "Error" && f["source"] == "traffic"));
    let by_code = get(&router, "/api/v1/findings?code=ML2002", &token).await.json();
    assert!(by_code["total"].as_u64().unwrap() >= 1);
    assert!(by_code["items"].as_array().unwrap().iter().all(|f| f["code"] == "ML2002"));

    let config = get(&router, "/api/v1/config", &token).await.json();
    assert_eq!(config["counts"]["VirtualService"], 2, "{config}");
    assert_eq!(config["counts"]["Service"], 5);
    assert_eq!(config["errors"], Value::Array(vec![]));
    let kinds = get(&router, "/api/v1/config?kind=DestinationRule", &token).await.json();
    assert_eq!(kinds["total"], 4, "{kinds}");
    assert!(kinds["items"].as_array().unwrap().iter().all(|r| r["kind"] == "DestinationRule"
        && r["origin"]["file"].as_str().unwrap().ends_with("destination-rule-all-mtls.yaml")));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_with_the_reason() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.token(Role::Viewer, None).await;
    let router = env.router();
    let cases = [
        ("/api/v1/graph?windw=1h", "unknown parameter \"windw\""),
        ("/api/v1/graph?window=1h&window=2h", "more than once"),
        ("/api/v1/graph?window=forever", "window: expected a number and a unit"),
        ("/api/v1/graph?window=0m", "longer than zero"),
        ("/api/v1/graph?window=32d", "the longest allowed is 31d"),
        ("/api/v1/graph?window=99999999999999w", "too long"),
        ("/api/v1/graph?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z", "must be before end"),
        ("/api/v1/graph?start=yesterday", "start: expected an RFC 3339 time"),
        ("/api/v1/graph?start=1562-02-25T02:09:55Z&window=1h", "outside the supported time range"),
        ("/api/v1/graph?end=2999-01-01T00:00:00Z", "outside the supported time range"),
        ("/api/v1/graph?start=2026-01-01T00:00:00Z&end=2026-01-01T01:00:00Z&window=1h", "at most two of"),
        ("/api/v1/graph?limit=0", "limit: expected an integer from 1 to 1000"),
        ("/api/v1/graph?limit=1001", "limit: expected an integer from 1 to 1000"),
        ("/api/v1/graph?offset=-1", "offset: expected a non-negative integer"),
        ("/api/v1/graph?namespace=Not_A_Namespace", "namespace: invalid namespace"),
        ("/api/v1/mtls/coverage?classification=fine", "classification: unknown value \"fine\""),
        ("/api/v1/routes?unused=maybe", "unused: expected true or false"),
        ("/api/v1/resilience/gaps?only_gaps=1", "only_gaps: expected true or false"),
        ("/api/v1/recommendations?kind=magic", "kind: unknown value \"magic\""),
        ("/api/v1/findings?level=fatal", "level: unknown level \"fatal\""),
        ("/api/v1/findings?code=XX9999", "code: unknown code \"XX9999\""),
        ("/api/v1/findings?source=logs", "source: unknown value \"logs\""),
        ("/api/v1/config?kind=Gadget", "kind: unknown kind \"Gadget\""),
        ("/api/v1/config?window=1h", "unknown parameter \"window\""),
    ];
    for (uri, reason) in cases {
        let answer = get(&router, uri, &token).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}: {}", String::from_utf8_lossy(&answer.body));
        assert_eq!(answer.error_code(), "bad_request", "{uri}");
        assert!(answer.message().contains(reason), "{uri}: {:?} lacks {reason:?}", answer.message());
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_answer_json_errors() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.token(Role::Viewer, None).await;
    let router = env.router();
    for uri in ["/api/v1/nothing", "/api/v2/graph", "/elsewhere"] {
        let answer = get(&router, uri, &token).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(answer.error_code(), "not_found");
        assert!(answer.headers.contains_key("x-request-id"));
    }
    let answer = call(&router, Method::DELETE, "/api/v1/graph", Some(&token), None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.error_code(), "method_not_allowed");
    env.cleanup().await;
}
