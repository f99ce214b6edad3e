//! A Kubernetes API server that speaks just enough of the list and watch protocol for kube's client and
//! kube-runtime's watcher, over plain HTTP on a real socket:
//!
//! - `GET /version`;
//! - lists (`GET /api/v1/pods`, `/apis/GROUP/VERSION/PLURAL`) as `XList` JSON with `metadata.resourceVersion`,
//!   paged by `limit`/`continue`, items without apiVersion/kind (as real servers send them);
//! - watches (`?watch=true&resourceVersion=N`) as a chunked stream of JSON lines: `ADDED`, `MODIFIED`,
//!   `DELETED` and `BOOKMARK` events after N, then live ones; a resource version older than the last
//!   [`FakeApi::expire`] gets an `ERROR` event with a `410 Gone` Status, as etcd compaction causes;
//! - `404` with a Status body for API groups marked missing (Istio not installed).
//!
//! Tests change objects with [`FakeApi::apply`] / [`FakeApi::delete`]; [`FakeApi::apply_silently`]
//! changes one without an event, which only a relist can reveal.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where a kind is served: `/api/v1/namespaces` or `/apis/networking.istio.io/v1/virtualservices`.
fn collection_path(api_version: &str, kind: &str) -> String {
    let plural = match kind {
        "Ingress" => "ingresses".to_owned(),
        "ServiceEntry" => "serviceentries".to_owned(),
        "AuthorizationPolicy" => "authorizationpolicies".to_owned(),
        other => format!("{}s", other.to_lowercase()),
    };
    if api_version.contains('/') {
        format!("/apis/{api_version}/{plural}")
    } else {
        format!("/api/{api_version}/{plural}")
    }
}

#[derive(Debug, Clone)]
enum Logged {
    Event {
        rv: u64,
        path: String,
        event: Value,
    },
    /// Every watch open at this point ends with 410 Gone.
    Expire {
        rv: u64,
    },
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// collection path -> (namespace, name) -> object (with apiVersion, kind and resourceVersion).
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    log: Vec<Logged>,
    /// Watches from a resource version below this get 410 Gone.
    oldest_valid_rv: u64,
    missing_groups: BTreeSet<String>,
    /// Requests seen, `METHOD path?query`, for assertions on the protocol.
    requests: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
    pub addr: SocketAddr,
}

impl FakeApi {
    /// Serves `objects` (documents with apiVersion, kind and metadata) on a free local port; API groups in
    /// `missing_groups` answer 404.
    pub async fn start(objects: Vec<Value>, missing_groups: &[&str]) -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changed, _) = watch::channel(0);
        let api = FakeApi {
            inner: Arc::new(Mutex::new(Inner {
                missing_groups: missing_groups.iter().map(|g| (*g).to_owned()).collect(),
                ..Inner::default()
            })),
            changed,
            addr,
        };
        for object in objects {
            api.apply_silently(object);
        }
        let app = axum::Router::new().fallback(handle).with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        api
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
                 users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
                 user: tester\n    namespace: default\ncurrent-context: fake\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    fn store(inner: &mut Inner, mut object: Value) -> (String, &'static str, Value) {
        inner.rv += 1;
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let path = collection_path(object["apiVersion"].as_str().unwrap(), object["kind"].as_str().unwrap());
        let key = (
            object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
            object["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        let collection = inner.objects.entry(path.clone()).or_default();
        let kind = if collection.insert(key, object.clone()).is_some() { "MODIFIED" } else { "ADDED" };
        (path, kind, object)
    }

    /// Creates or replaces an object and sends ADDED or MODIFIED to its watches.
    pub fn apply(&self, object: Value) {
        let mut inner = self.inner.lock().unwrap();
        let (path, kind, object) = Self::store(&mut inner, object);
        let rv = inner.rv;
        inner.log.push(Logged::Event { rv, path, event: json!({"type": kind, "object": object}) });
        self.changed.send_replace(rv);
    }

    /// Creates or replaces an object without telling any watch (as if its event was compacted away).
    pub fn apply_silently(&self, object: Value) {
        let mut inner = self.inner.lock().unwrap();
        Self::store(&mut inner, object);
    }

    /// Deletes an object and sends DELETED with its last state.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        let path = collection_path(api_version, kind);
        let removed = inner.objects.get_mut(&path).and_then(|c| c.remove(&(namespace.to_owned(), name.to_owned())));
        let mut object = removed.unwrap_or_else(|| panic!("no {kind} {namespace}/{name} to delete"));
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.log.push(Logged::Event { rv, path, event: json!({"type": "DELETED", "object": object}) });
        self.changed.send_replace(rv);
    }

    /// Sends a BOOKMARK (the current resource version, no object change) to every watch.
    pub fn bookmark(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let paths: Vec<String> = inner.objects.keys().cloned().collect();
        for path in paths {
            let event = json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": rv.to_string()}}});
            inner.log.push(Logged::Event { rv, path, event });
        }
        self.changed.send_replace(rv);
    }

    /// Compacts history: open watches end with 410 Gone, and watching from any earlier resource version
    /// gets 410 too, so clients must relist.
    pub fn expire(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        inner.oldest_valid_rv = rv;
        inner.log.push(Logged::Expire { rv });
        self.changed.send_replace(rv);
    }

    /// Requests seen so far whose path and query contain `needle`.
    pub fn requests_matching(&self, needle: &str) -> Vec<String> {
        self.inner.lock().unwrap().requests.iter().filter(|r| r.contains(needle)).cloned().collect()
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn handle(State(api): State<FakeApi>, uri: Uri, Query(query): Query<HashMap<String, String>>) -> Response {
    let path = uri.path().to_owned();
    api.inner.lock().unwrap().requests.push(format!("GET {uri}"));
    if path == "/version" {
        return axum::Json(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
        }))
        .into_response();
    }
    let group = path.strip_prefix("/apis/").and_then(|rest| rest.split('/').next());
    let known = path.starts_with("/api/v1/") || path.starts_with("/apis/");
    if !known || group.is_some_and(|g| api.inner.lock().unwrap().missing_groups.contains(g)) {
        let body = status(404, "NotFound", "the server could not find the requested resource");
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = query.get("resourceVersion").and_then(|rv| rv.parse().ok()).unwrap_or(0);
        return watch_response(api, path, from);
    }
    list_response(&api, &path, &query)
}

fn list_response(api: &FakeApi, path: &str, query: &HashMap<String, String>) -> Response {
    let inner = api.inner.lock().unwrap();
    let items: Vec<Value> = inner
        .objects
        .get(path)
        .into_iter()
        .flat_map(|c| c.values())
        .map(|object| {
            let mut item = object.clone();
            let fields = item.as_object_mut().unwrap();
            fields.remove("apiVersion");
            fields.remove("kind");
            item
        })
        .collect();
    let start: usize = query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).filter(|&l| l > 0).unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let page = items.get(start..end).unwrap_or_default().to_vec();
    let mut metadata = json!({"resourceVersion": inner.rv.to_string()});
    if end < items.len() {
        metadata["continue"] = json!(end.to_string());
    }
    axum::Json(json!({"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": page})).into_response()
}

fn watch_response(api: FakeApi, path: String, from: u64) -> Response {
    let mut changed = api.changed.subscribe();
    let stream = async_stream_lines(move |tx| async move {
        let mut position = from;
        let mut sent = 0usize; // log entries already considered
        if from < api.inner.lock().unwrap().oldest_valid_rv {
            let gone = status(410, "Expired", &format!("too old resource version: {from}"));
            let _ = tx.send(json!({"type": "ERROR", "object": gone})).await;
            return;
        }
        loop {
            let pending: Vec<Logged> = {
                let inner = api.inner.lock().unwrap();
                let new = inner.log[sent..].to_vec();
                sent = inner.log.len();
                new
            };
            for entry in pending {
                match entry {
                    Logged::Event { rv, path: p, event } if p == path && rv > position => {
                        position = rv;
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    Logged::Expire { rv } if rv > position => {
                        let gone = status(410, "Expired", &format!("too old resource version: {position} ({rv})"));
                        let _ = tx.send(json!({"type": "ERROR", "object": gone})).await;
                        return;
                    }
                    _ => {}
                }
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    });
    Response::builder().header("content-type", "application/json").body(stream).unwrap()
}

/// A chunked body of JSON lines produced by `producer` through a channel.
fn async_stream_lines<F, Fut>(producer: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Value>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(16);
    tokio::spawn(producer(tx));
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|item| item.map(|v| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{v}\n")))))
    });
    Body::from_stream(stream)
}
