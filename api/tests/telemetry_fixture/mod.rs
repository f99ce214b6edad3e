//! A real store in a temporary directory, filled with synthetic requests and spans across three namespaces
//! (half flushed to Parquet, half still in memory), shared by the SQL and chart tests.

#![allow(dead_code)] // each test crate uses part of it

use axum::Router;
use axum::body::Body;
use chrono::{TimeDelta, Utc};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use meshlens_api::{AppState, Caller, MeshSnapshot, Role};
use meshlens_model::record::RequestRecord;
use meshlens_store::synth::{RequestGenerator, span_for};
use meshlens_store::{Store, StoreConfig};
use std::sync::Arc;
use tower::ServiceExt;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub records: Vec<RequestRecord>,
}

impl Fixture {
    /// Requests a caller scoped to `namespace` may see: those whose source or destination is in it.
    pub fn visible(&self, namespace: &str) -> usize {
        self.records
            .iter()
            .filter(|r| {
                r.source_namespace.as_deref() == Some(namespace)
                    || r.destination_namespace.as_deref() == Some(namespace)
            })
            .count()
    }
}

/// Namespaces by record index: a third each in `default`, `shop` and `bank`, and every tenth record a call
/// from `shop` to `bank`.
fn namespaces(i: usize) -> (&'static str, &'static str) {
    if i % 10 == 5 {
        return ("shop", "bank");
    }
    match i % 3 {
        0 => ("default", "default"),
        1 => ("shop", "shop"),
        _ => ("bank", "bank"),
    }
}

/// `n` requests over the last 50 minutes (and their spans), in a fresh store.
pub async fn fixture(n: usize) -> Fixture {
    fixture_with(n, |_, _| {}).await
}

/// Like [`fixture`], with `edit` applied to each record (by index) before it is stored.
pub async fn fixture_with(n: usize, edit: impl Fn(usize, &mut RequestRecord)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path().join("data"))).await.expect("open store");
    let start = Utc::now() - TimeDelta::minutes(50);
    let rate = u32::try_from(n / 2400).unwrap_or(u32::MAX).max(1);
    let mut records = RequestGenerator::new(7, start, rate).batch(n);
    for (i, record) in records.iter_mut().enumerate() {
        let (source, destination) = namespaces(i);
        record.source_namespace = Some(source.into());
        record.destination_namespace = Some(destination.into());
        edit(i, record);
    }
    let (first, second) = records.split_at(n / 2);
    for part in [first, second] {
        store.append_requests(part.to_vec()).await.expect("append requests");
        store.append_spans(part.iter().map(span_for).collect()).await.expect("append spans");
        if part.as_ptr() == first.as_ptr() {
            store.flush().await.expect("flush");
        }
    }
    let state = AppState::new(Arc::new(store), MeshSnapshot::default()).expect("executor");
    Fixture { dir, state, records }
}

pub fn viewer(namespace: Option<&str>) -> Caller {
    Caller { role: Role::Viewer, namespace: namespace.map(str::to_owned) }
}

/// `routes` under `/api/v1`, called as `caller` (what the auth layer puts in the request).
pub fn app(routes: Router<AppState>, state: &AppState, caller: Caller) -> Router {
    Router::new().nest("/api/v1", routes).layer(axum::Extension(caller)).with_state(state.clone())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The message of an error answer, after checking its status and code.
    pub fn error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        body["error"]["message"].as_str().expect("message").to_owned()
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Answer { status, headers, body }
}

pub async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}
