//! The environment of the core API tests: a real store (SQLite in a temporary directory, or a fresh
//! PostgreSQL database per test) holding requests in two namespaces, Istio's bookinfo and httpbin samples
//! as the configuration, tokens, and a one-shot client for the router.

#![allow(dead_code)] // each test module uses a different part

use axum::Router;
use axum::body::Body;
use chrono::{DateTime, TimeDelta, Utc};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use meshlens_api::tokens::Tokens;
use meshlens_api::{AppState, MeshSnapshot, Role};
use meshlens_model::RequestRecord;
use meshlens_model::mesh::{LoadReport, MeshSettings};
use meshlens_model::record::{Direction, Mtls, Reporter};
use meshlens_store::{Store, StoreConfig};
use serde_json::Value;
use sqlx::Connection;
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One `#[tokio::test]` per backend for each listed `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The Istio samples the configuration is loaded from (bookinfo with an 80/20 split of `reviews`, mTLS
/// DestinationRules and its gateway; httpbin), all in namespace `default`.
pub fn snapshot() -> MeshSnapshot {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/istio-samples");
    let paths = [
        "bookinfo/platform/kube/bookinfo.yaml",
        "bookinfo/networking/destination-rule-all-mtls.yaml",
        "bookinfo/networking/virtual-service-reviews-80-20.yaml",
        "bookinfo/networking/bookinfo-gateway.yaml",
        "httpbin/httpbin.yaml",
    ]
    .map(|p| samples.join(p));
    let report = LoadReport::load_paths(&paths);
    assert!(report.errors.is_empty(), "samples: {:?}", report.errors);
    assert!(!report.resources.is_empty());
    MeshSnapshot::new(report, MeshSettings::default())
}

fn record(at: DateTime<Utc>, source: (&str, &str), service: &str, direction: Direction) -> RequestRecord {
    let (service_name, service_namespace) = service.split_once('.').expect("name.namespace");
    let server = direction == Direction::Inbound;
    RequestRecord {
        timestamp: at,
        duration_ms: Some(10),
        method: Some("GET".into()),
        path: Some("/".into()),
        protocol: Some("HTTP/1.1".into()),
        authority: Some(format!("{service_name}.{service_namespace}:9080")),
        status: Some(200),
        reporter: if server { Reporter::Destination } else { Reporter::Source },
        direction,
        upstream_cluster: Some(if server {
            "inbound|9080||".to_owned()
        } else {
            format!("outbound|9080||{service_name}.{service_namespace}.svc.cluster.local")
        }),
        destination_service: Some(format!("{service_name}.{service_namespace}.svc.cluster.local")),
        destination_port: Some(9080),
        destination_namespace: Some(service_namespace.into()),
        destination_workload: server.then(|| format!("{service_name}-v1")),
        source_namespace: Some(source.0.into()),
        source_workload: Some(source.1.into()),
        mtls: if server { Mtls::Mutual } else { Mtls::Unknown },
        ..Default::default()
    }
}

/// The traffic, spread over the 30 minutes before `end`:
/// - `default/productpage-v1` → `reviews.default`: 200 requests logged by both sides (paired by request
///   id), 20 of them 503, durations 1..=200 ms;
/// - `default/reviews-v2` → `ratings.default`: 50 mutual requests, server side only;
/// - `shop/web` → `api.shop`: 40 plaintext requests, server side only;
/// - `shop/web` → `ratings.default`: 10 mutual requests, server side only.
pub fn records(end: DateTime<Utc>) -> Vec<RequestRecord> {
    let at = |i: usize| end - TimeDelta::seconds(5 + (i % 1700) as i64);
    let mut out = Vec::new();
    for i in 0..200 {
        let id = format!("pp-{}-{i}", end.timestamp_micros());
        let status = if i % 10 == 0 { 503 } else { 200 };
        let duration = Some(1 + i as u64);
        let mut client = record(at(i), ("default", "productpage-v1"), "reviews.default", Direction::Outbound);
        client.request_id = Some(id.clone());
        client.status = Some(status);
        client.duration_ms = duration;
        let mut server = record(at(i), ("default", "productpage-v1"), "reviews.default", Direction::Inbound);
        server.request_id = Some(id);
        server.status = Some(status);
        server.duration_ms = duration;
        out.extend([client, server]);
    }
    for i in 0..50 {
        let mut r = record(at(i), ("default", "reviews-v2"), "ratings.default", Direction::Inbound);
        r.request_id = Some(format!("rv-{i}"));
        out.push(r);
    }
    for i in 0..40 {
        let mut r = record(at(i), ("shop", "web"), "api.shop", Direction::Inbound);
        r.request_id = Some(format!("shop-{i}"));
        r.mtls = Mtls::Plaintext;
        out.push(r);
    }
    for i in 0..10 {
        let mut r = record(at(i), ("shop", "web"), "ratings.default", Direction::Inbound);
        r.request_id = Some(format!("shop-ratings-{i}"));
        out.push(r);
    }
    out
}

/// A store and the API over it, for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub store: Arc<Store>,
    pg: Option<(String, String)>,
}

fn pg_admin_url() -> String {
    std::env::var("MESHLENS_TEST_PG_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
}

impl Env {
    /// A store on `backend` holding [`records`] ending now, with the samples as configuration.
    pub async fn new(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut pg = None;
        let mut database_url = None;
        if backend == Backend::Postgres {
            let admin = pg_admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e} (see .ci/run)"));
            let name = format!("meshlens_api_core_{}_{}", std::process::id(), fastrand::u64(..) & 0xffff_ffff_ffff);
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            conn.close().await.ok();
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            database_url = Some(format!("{base}/{name}"));
            pg = Some((admin, name));
        }
        let config = StoreConfig { database_url, ..StoreConfig::new(dir.path()) };
        let store = Arc::new(Store::open(config).await.expect("open store"));
        store.append_requests(records(Utc::now())).await.expect("append");
        let state = AppState::new(Arc::clone(&store), snapshot()).expect("executor");
        Env { dir, state, store, pg }
    }

    pub fn router(&self) -> Router {
        meshlens_api::router(self.state.clone())
    }

    pub fn tokens(&self) -> Tokens {
        Tokens::new(self.store.catalog().clone())
    }

    /// A new token's secret.
    pub async fn token(&self, role: Role, namespace: Option<&str>) -> String {
        self.tokens().create(role, namespace, "test").await.expect("create token").secret
    }

    pub async fn cleanup(self) {
        drop(self.state);
        if let Some((admin, name)) = &self.pg {
            let mut conn = sqlx::PgConnection::connect(admin).await.expect("reconnect to drop test database");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await
                .expect("drop test database");
        }
    }
}

/// An answer of the router.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: status {} body {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    /// The error code of an error answer, after checking its shape.
    pub fn error_code(&self) -> String {
        let json = self.json();
        let error = json.get("error").unwrap_or_else(|| panic!("no error object in {json}"));
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {json}");
        assert_eq!(error.as_object().map(|o| o.len()), Some(2), "error has only code and message: {json}");
        error["code"].as_str().expect("code").to_owned()
    }

    pub fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_owned()
    }
}

/// One request through `router` (a fresh clone: `oneshot` consumes it).
pub async fn call(router: &Router, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = router.clone().oneshot(request.body(body).expect("request")).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Answer { status, headers, body }
}

pub async fn get(router: &Router, uri: &str, token: &str) -> Answer {
    call(router, Method::GET, uri, Some(token), None).await
}
