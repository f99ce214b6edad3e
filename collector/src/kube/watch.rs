//! The reflectors over [`WATCHED_KINDS`] and the debounced snapshots built from them.

use super::{Cluster, KubeError, WATCHED_KINDS, WatchedKind, chain};
use ::kube::api::{Api, ApiResource, DynamicObject, ListParams, ResourceExt};
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::{WatchStreamExt, watcher};
use futures::StreamExt;
use meshlens_model::mesh::LoadReport;
use meshlens_store::config_history::{Digests, hash_json, resource_digests};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Timing of a [`ClusterWatch`].
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Quiet time after the last event before a new snapshot is built: a rollout's burst of Pod events
    /// becomes one snapshot (and one config version).
    pub debounce: Duration,
    /// Longest a snapshot waits under a steady stream of events.
    pub max_delay: Duration,
    /// How long start-up waits for the initial list of every kind.
    pub initial_sync_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            initial_sync_timeout: Duration::from_secs(60),
        }
    }
}

/// The cluster's configuration at one moment.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    /// Every watched object of a kind the model knows, loaded as from files (origin `kube:Kind/ns/name`).
    pub report: LoadReport,
    /// Content hash per watched object, EndpointSlices included (by their addresses, readiness and
    /// ports), for config history.
    pub digests: Digests,
}

impl ClusterSnapshot {
    /// Whether `other` holds the same configuration (same objects, same load errors).
    fn same_as(&self, other: &ClusterSnapshot) -> bool {
        self.digests == other.digests && self.report.errors == other.report.errors
    }
}

/// A kind that is not watched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKind {
    pub kind: WatchedKind,
    pub reason: String,
}

/// One served kind: how to address it and its reflector's cache.
#[derive(Clone)]
struct Reflected {
    kind: WatchedKind,
    resource: ApiResource,
    store: Store<DynamicObject>,
}

/// Reflectors over every served watched kind, and the latest snapshot. Dropping it stops the watches.
pub struct ClusterWatch {
    updates: watch::Receiver<Arc<ClusterSnapshot>>,
    skipped: Vec<SkippedKind>,
    _tasks: JoinSet<()>,
}

impl std::fmt::Debug for ClusterWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWatch").field("skipped", &self.skipped).finish_non_exhaustive()
    }
}

impl ClusterWatch {
    /// Finds which kinds the server serves, starts a reflector for each, and returns once every initial
    /// list is complete, with the first snapshot in [`ClusterWatch::current`].
    pub async fn start(cluster: &Cluster, options: WatchOptions) -> Result<ClusterWatch, KubeError> {
        let mut served = Vec::new();
        let mut skipped = Vec::new();
        for kind in WATCHED_KINDS {
            match resolve(cluster, kind).await? {
                Ok(resource) => served.push((*kind, resource)),
                Err(reason) => skipped.push(SkippedKind { kind: *kind, reason }),
            }
        }
        report_skipped(&cluster.url, &skipped);

        let (dirty_tx, dirty_rx) = mpsc::channel(1);
        let mut tasks = JoinSet::new();
        let mut reflected = Vec::new();
        for (kind, resource) in served {
            let writer = reflector::store::Writer::new(resource.clone());
            reflected.push(Reflected { kind, resource: resource.clone(), store: writer.as_reader() });
            let api = Api::<DynamicObject>::all_with(cluster.client.clone(), &resource);
            tasks.spawn(reflect(kind, api, writer, dirty_tx.clone()));
        }
        drop(dirty_tx);

        for reflected in &reflected {
            let ready = tokio::time::timeout(options.initial_sync_timeout, reflected.store.wait_until_ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                return Err(KubeError::InitialSync {
                    what: format!("{} ({})", reflected.kind.plural, reflected.resource.api_version),
                    timeout: options.initial_sync_timeout,
                });
            }
        }
        let first = build_snapshot(reflected.clone()).await;
        tracing::info!(
            resources = first.report.resources.len(),
            objects = first.digests.len(),
            kinds = reflected.len(),
            "cluster configuration listed"
        );
        let (updates_tx, updates) = watch::channel(Arc::new(first));
        tasks.spawn(debounce(dirty_rx, reflected, updates_tx, options));
        Ok(ClusterWatch { updates, skipped, _tasks: tasks })
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<ClusterSnapshot> {
        Arc::clone(&self.updates.borrow())
    }

    /// Waits for the next snapshot that differs from the last one returned; `None` once the watch
    /// stopped.
    pub async fn changed(&mut self) -> Option<Arc<ClusterSnapshot>> {
        self.updates.changed().await.ok()?;
        Some(Arc::clone(&self.updates.borrow_and_update()))
    }

    /// Kinds not watched (API group not served, or listing forbidden), with why.
    pub fn skipped(&self) -> &[SkippedKind] {
        &self.skipped
    }
}

/// The first version of `kind` the server serves, `Err(reason)` when it serves none or forbids listing,
/// or a start-up error when the server could not be asked.
async fn resolve(cluster: &Cluster, kind: &WatchedKind) -> Result<Result<ApiResource, String>, KubeError> {
    let mut reason = String::new();
    for version in kind.versions {
        let resource = ApiResource {
            group: kind.group.to_owned(),
            version: (*version).to_owned(),
            api_version: kind.api_version(version),
            kind: kind.kind.to_owned(),
            plural: kind.plural.to_owned(),
        };
        let api = Api::<DynamicObject>::all_with(cluster.client.clone(), &resource);
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Ok(resource)),
            Err(::kube::Error::Api(status)) if status.code == 404 => {
                reason = format!("{} is not served", resource.api_version);
            }
            Err(::kube::Error::Api(status)) if status.code == 403 => {
                return Ok(Err(format!(
                    "listing {} ({}) is forbidden: {} (grant get/list/watch, see deploy/base/rbac.yaml)",
                    kind.plural, resource.api_version, status.message
                )));
            }
            Err(source) => {
                return Err(KubeError::List {
                    what: format!("{} ({})", kind.plural, resource.api_version),
                    url: cluster.url.clone(),
                    source,
                });
            }
        }
    }
    if kind.custom {
        reason.push_str(" (its CustomResourceDefinition is not installed)");
    }
    Ok(Err(reason))
}

/// One warning per API group, so a cluster without Istio says so once, not once per kind.
fn report_skipped(url: &str, skipped: &[SkippedKind]) {
    let mut by_group: BTreeMap<&str, Vec<&SkippedKind>> = BTreeMap::new();
    for skip in skipped {
        by_group.entry(skip.kind.group).or_default().push(skip);
    }
    for (group, kinds) in by_group {
        let names: Vec<&str> = kinds.iter().map(|s| s.kind.kind).collect();
        let group = if group.is_empty() { "core" } else { group };
        tracing::warn!(
            server = url,
            "not watching {} of API group {group}: {}; restart meshlens after installing it to watch them",
            names.join(", "),
            kinds[0].reason
        );
    }
}

/// Runs one kind's reflector until the watch ends, signalling `dirty` after every change of its cache.
/// Errors (the API server restarting, `410 Gone` forcing a relist) are retried with kube's backoff.
async fn reflect(
    kind: WatchedKind,
    api: Api<DynamicObject>,
    writer: reflector::store::Writer<DynamicObject>,
    dirty: mpsc::Sender<()>,
) {
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        // meshlens never reads managedFields, the bulk of many objects.
        .modify(|object: &mut DynamicObject| object.managed_fields_mut().clear());
    let mut events = std::pin::pin!(reflector::reflector(writer, events));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                // A full channel already holds a pending signal; one is enough.
                let _ = dirty.try_send(());
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::info!(kind = kind.kind, "watch expired (410 Gone); relisting");
            }
            Err(err) => tracing::warn!(kind = kind.kind, "watch failed, retrying: {}", chain(&err)),
        }
    }
}

/// Builds a snapshot after each burst of changes and publishes it when the configuration differs.
async fn debounce(
    mut dirty: mpsc::Receiver<()>,
    reflected: Vec<Reflected>,
    updates: watch::Sender<Arc<ClusterSnapshot>>,
    options: WatchOptions,
) {
    while dirty.recv().await.is_some() {
        let deadline = Instant::now() + options.max_delay;
        loop {
            tokio::select! {
                more = dirty.recv() => {
                    if more.is_none() { return; }
                    if Instant::now() >= deadline { break; }
                }
                () = tokio::time::sleep(options.debounce) => break,
            }
        }
        let snapshot = build_snapshot(reflected.clone()).await;
        if snapshot.same_as(&updates.borrow()) {
            continue;
        }
        tracing::info!(
            resources = snapshot.report.resources.len(),
            objects = snapshot.digests.len(),
            "cluster configuration changed"
        );
        if updates.send(Arc::new(snapshot)).is_err() {
            return; // nobody listens any more
        }
    }
}

/// Loads every cached object; off the async threads, since a large cluster means many documents.
async fn build_snapshot(reflected: Vec<Reflected>) -> ClusterSnapshot {
    tokio::task::spawn_blocking(move || snapshot_of(&reflected)).await.unwrap_or_else(|err| {
        tracing::error!("building the cluster snapshot failed: {err}");
        ClusterSnapshot::default()
    })
}

fn snapshot_of(reflected: &[Reflected]) -> ClusterSnapshot {
    let mut report = LoadReport::default();
    let mut digests = Digests::new();
    for Reflected { kind, resource, store } in reflected {
        let mut objects = store.state();
        objects.sort_by_key(|object| (object.namespace(), object.name_any()));
        for object in objects {
            let mut value = serde_json::to_value(&*object).unwrap_or(Value::Null);
            let Some(fields) = value.as_object_mut() else { continue };
            // List items carry no apiVersion/kind; the loader needs both.
            fields.insert("apiVersion".into(), Value::String(resource.api_version.clone()));
            fields.insert("kind".into(), Value::String(kind.kind.to_owned()));
            let path = match object.namespace() {
                Some(ns) => format!("{}/{ns}/{}", kind.kind, object.name_any()),
                None => format!("{}/{}", kind.kind, object.name_any()),
            };
            if kind.kind == "EndpointSlice" {
                digests.insert(path.replacen('/', " ", 1), hash_json(&endpoint_slice_essentials(&value)));
            } else {
                report.parse_str(&format!("kube:{path}"), &value.to_string());
            }
        }
    }
    digests.extend(resource_digests(&report.resources));
    ClusterSnapshot { report, digests }
}

/// What of an EndpointSlice says which endpoints back a service: addresses, readiness, target and
/// ports — not the timestamps and hints that change without the endpoints changing.
fn endpoint_slice_essentials(slice: &Value) -> Value {
    let endpoints: Vec<Value> = slice
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|endpoint| {
            json!({
                "addresses": endpoint.get("addresses"),
                "ready": endpoint.pointer("/conditions/ready"),
                "targetRef": endpoint.get("targetRef").map(|t| json!({
                    "kind": t.get("kind"), "namespace": t.get("namespace"), "name": t.get("name"),
                })),
            })
        })
        .collect();
    json!({
        "addressType": slice.get("addressType"),
        "endpoints": endpoints,
        "ports": slice.get("ports"),
        "service": slice.pointer("/metadata/labels/kubernetes.io~1service-name"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_slice_essentials_ignore_timestamps_and_hints() {
        let slice = |ready: bool, stamp: &str| {
            json!({
                "metadata": {"name": "reviews-abc", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "reviews"},
                             "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": stamp}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready},
                               "targetRef": {"kind": "Pod", "namespace": "default", "name": "reviews-v1-x", "uid": "u"},
                               "zone": "a"}],
                "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
            })
        };
        let digest = |v: &Value| hash_json(&endpoint_slice_essentials(v));
        assert_eq!(digest(&slice(true, "t1")), digest(&slice(true, "t2")));
        assert_ne!(digest(&slice(true, "t1")), digest(&slice(false, "t1")));
    }
}
