//! Config history: every change of the mesh configuration in force, as a numbered version in the SQL
//! catalog — what changed (resource keys added, modified, deleted), when, where it came from, and a
//! content hash of the whole configuration.
//!
//! A configuration is summarized as [`Digests`]: resource key (`Kind namespace/name`) to a SHA-256 of
//! the resource's canonical JSON. [`resource_digests`] computes them for typed model resources from
//! their *model* form (the fields meshlens reads, without `resourceVersion`), so a Pod whose status
//! conditions change but whose IP and labels do not is not a new version. [`ConfigHistory::record`]
//! diffs against the previous version (kept in `config_resources`, so the diff survives restarts) and
//! writes a version only when something changed; recording an identical configuration returns the
//! version already in force. Tables: `migrations/*/20261127000004_config_versions.sql`.

use crate::catalog::Catalog;
use crate::error::{Result, StoreError};
use chrono::{DateTime, Utc};
use meshlens_model::mesh::{LoadedResource, Resource};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tokio::sync::Mutex;

/// Resource key (`Kind namespace/name`, or `Kind name` for cluster-scoped kinds) to content hash.
pub type Digests = BTreeMap<String, String>;

/// The key of a model resource: `Kind namespace/name` with the effective namespace (`default` when the
/// document named none), `Kind name` for cluster-scoped kinds.
pub fn resource_key(resource: &Resource) -> String {
    let meta = resource.metadata();
    let kind = resource.kind();
    if kind.is_namespaced() { format!("{kind} {}/{}", meta.ns(), meta.name) } else { format!("{kind} {}", meta.name) }
}

/// Digests of typed resources, hashed in their model form without `metadata.resourceVersion` (which
/// changes on every write, also when nothing meshlens reads did). A later duplicate key wins, as in
/// `MeshConfig`.
pub fn resource_digests(resources: &[LoadedResource]) -> Digests {
    resources
        .iter()
        .map(|loaded| {
            let mut value = serde_json::to_value(&loaded.resource).unwrap_or(Value::Null);
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            (resource_key(&loaded.resource), hash_json(&value))
        })
        .collect()
}

/// SHA-256 (hex) of `value`'s canonical JSON: object keys sorted, no whitespace, so equal values hash
/// equally whatever order their fields arrived in.
pub fn hash_json(value: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(value, &mut hasher);
    hex(&hasher.finalize())
}

fn write_canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            hasher.update(b"{");
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                hasher.update(Value::String(key.clone()).to_string().as_bytes());
                hasher.update(b":");
                write_canonical(item, hasher);
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_canonical(item, hasher);
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

/// The hash of a whole configuration: SHA-256 over its sorted `key hash` lines.
pub fn content_hash(digests: &Digests) -> String {
    let mut hasher = Sha256::new();
    for (key, hash) in digests {
        hasher.update(key.as_bytes());
        hasher.update(b" ");
        hasher.update(hash.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What changed between two configurations, as sorted resource keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ConfigChanges {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

impl ConfigChanges {
    /// The changes that turn `previous` into `current`.
    pub fn between(previous: &Digests, current: &Digests) -> Self {
        let mut changes = ConfigChanges::default();
        for (key, hash) in current {
            match previous.get(key) {
                None => changes.added.push(key.clone()),
                Some(old) if old != hash => changes.modified.push(key.clone()),
                Some(_) => {}
            }
        }
        changes.deleted = previous.keys().filter(|key| !current.contains_key(*key)).cloned().collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }
}

/// One recorded configuration version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigVersion {
    pub id: i64,
    pub recorded_at: DateTime<Utc>,
    /// `files` or `kube`.
    pub source: String,
    pub content_hash: String,
    pub resource_count: i64,
    pub changes: ConfigChanges,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    id: i64,
    recorded_at: i64,
    source: String,
    content_hash: String,
    resource_count: i64,
    changes: String,
}

impl VersionRow {
    fn into_version(self) -> Result<ConfigVersion> {
        let changes = serde_json::from_str(&self.changes).map_err(|e| StoreError::Catalog {
            backend: "config history",
            context: format!("decoding the changes of config version {}", self.id),
            cause: sqlx::Error::Decode(Box::new(e)),
        })?;
        Ok(ConfigVersion {
            id: self.id,
            recorded_at: DateTime::from_timestamp_micros(self.recorded_at).unwrap_or_default(),
            source: self.source,
            content_hash: self.content_hash,
            resource_count: self.resource_count,
            changes,
        })
    }
}

/// What [`ConfigHistory::record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new version, with what changed.
    New(ConfigVersion),
    /// Nothing changed since the latest version, which stays in force.
    Unchanged(ConfigVersion),
}

impl Recorded {
    /// The version in force after recording.
    pub fn version(&self) -> &ConfigVersion {
        match self {
            Recorded::New(v) | Recorded::Unchanged(v) => v,
        }
    }
}

/// Rows per multi-row insert: well under SQLite's and PostgreSQL's bound-parameter limits.
const INSERT_CHUNK: usize = 500;

const LIST_VERSIONS: &str = "SELECT id, recorded_at, source, content_hash, resource_count, changes \
    FROM config_versions WHERE id < $1 ORDER BY id DESC LIMIT $2";
const GET_VERSION: &str =
    "SELECT id, recorded_at, source, content_hash, resource_count, changes FROM config_versions WHERE id = $1";

/// Runs `$body` with `$pool` bound to the backend's pool, written once and type-checked for each.
macro_rules! with_pool {
    ($catalog:expr, $pool:ident => $body:expr) => {
        match $catalog {
            Catalog::Sqlite($pool) => $body,
            Catalog::Postgres($pool) => $body,
        }
    };
}

/// The config history in the catalog database. Recording is serialized (one writer at a time) and keeps
/// the latest digests in memory after the first load.
#[derive(Debug)]
pub struct ConfigHistory {
    catalog: Catalog,
    latest: Mutex<Option<Digests>>,
}

impl ConfigHistory {
    pub fn new(catalog: Catalog) -> Self {
        ConfigHistory { catalog, latest: Mutex::new(None) }
    }

    fn err(&self, context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
        let backend = self.catalog.backend();
        let context = context.to_owned();
        move |cause| StoreError::Catalog { backend, context, cause }
    }

    /// Records `digests` as the configuration in force, from `source` (`files` or `kube`): a new version
    /// if it differs from the latest one (or there is none), else the latest one, unchanged.
    pub async fn record(&self, source: &str, digests: &Digests) -> Result<Recorded> {
        let mut latest = self.latest.lock().await;
        let previous = match latest.take() {
            Some(previous) => previous,
            None => self.load_resources().await?,
        };
        let changes = ConfigChanges::between(&previous, digests);
        if changes.is_empty()
            && let Some(version) = self.latest_version().await?
        {
            *latest = Some(previous);
            return Ok(Recorded::Unchanged(version));
        }
        let version = ConfigVersion {
            id: 0,
            recorded_at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_default(),
            source: source.to_owned(),
            content_hash: content_hash(digests),
            resource_count: i64::try_from(digests.len()).unwrap_or(i64::MAX),
            changes,
        };
        let id = self.insert(&version, digests).await;
        // On failure the previous digests stay the reference, so the next attempt diffs against them.
        *latest = Some(if id.is_ok() { digests.clone() } else { previous });
        Ok(Recorded::New(ConfigVersion { id: id?, ..version }))
    }

    async fn insert(&self, version: &ConfigVersion, digests: &Digests) -> Result<i64> {
        let changes_json = serde_json::to_string(&version.changes).unwrap_or_default();
        let changed: Vec<(&String, &String)> = version
            .changes
            .added
            .iter()
            .chain(&version.changes.modified)
            .filter_map(|key| digests.get_key_value(key))
            .collect();
        let count = |keys: &Vec<String>| i64::try_from(keys.len()).unwrap_or(i64::MAX);
        with_pool!(&self.catalog, pool => {
            let mut tx = pool.begin().await.map_err(self.err("starting a config version"))?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO config_versions (recorded_at, source, content_hash, resource_count, added_count, \
                 modified_count, deleted_count, changes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(version.recorded_at.timestamp_micros())
            .bind(&version.source)
            .bind(&version.content_hash)
            .bind(version.resource_count)
            .bind(count(&version.changes.added))
            .bind(count(&version.changes.modified))
            .bind(count(&version.changes.deleted))
            .bind(&changes_json)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.err("inserting a config version"))?;
            for keys in version.changes.deleted.chunks(INSERT_CHUNK) {
                let mut delete = sqlx::QueryBuilder::new("DELETE FROM config_resources WHERE resource_key IN (");
                let mut list = delete.separated(", ");
                for key in keys {
                    list.push_bind(key);
                }
                delete.push(")");
                delete.build().execute(&mut *tx).await.map_err(self.err("deleting config resources"))?;
            }
            for rows in changed.chunks(INSERT_CHUNK) {
                let mut upsert =
                    sqlx::QueryBuilder::new("INSERT INTO config_resources (resource_key, content_hash, version_id) ");
                upsert.push_values(rows, |mut row, (key, hash)| {
                    row.push_bind(*key).push_bind(*hash).push_bind(id);
                });
                upsert.push(
                    " ON CONFLICT (resource_key) DO UPDATE SET content_hash = excluded.content_hash, \
                     version_id = excluded.version_id",
                );
                upsert.build().execute(&mut *tx).await.map_err(self.err("updating config resources"))?;
            }
            tx.commit().await.map_err(self.err("committing a config version"))?;
            Ok(id)
        })
    }

    async fn load_resources(&self) -> Result<Digests> {
        let rows: Vec<(String, String)> = with_pool!(&self.catalog, pool => {
            sqlx::query_as("SELECT resource_key, content_hash FROM config_resources")
                .fetch_all(pool)
                .await
                .map_err(self.err("reading config resources"))?
        });
        Ok(rows.into_iter().collect())
    }

    /// The version in force: the latest recorded.
    pub async fn latest_version(&self) -> Result<Option<ConfigVersion>> {
        Ok(self.list(1, None).await?.into_iter().next())
    }

    /// Versions newest first: at most `limit`, with ids below `before` when given (the previous page's
    /// last id).
    pub async fn list(&self, limit: u32, before: Option<i64>) -> Result<Vec<ConfigVersion>> {
        let rows: Vec<VersionRow> = with_pool!(&self.catalog, pool => {
            sqlx::query_as(LIST_VERSIONS)
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(self.err("listing config versions"))?
        });
        rows.into_iter().map(VersionRow::into_version).collect()
    }

    /// One version by id.
    pub async fn get(&self, id: i64) -> Result<Option<ConfigVersion>> {
        let row: Option<VersionRow> = with_pool!(&self.catalog, pool => {
            sqlx::query_as(GET_VERSION).bind(id).fetch_optional(pool).await.map_err(self.err("reading a config version"))?
        });
        row.map(VersionRow::into_version).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hashes_ignore_key_order_but_not_values() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, 2]}, "b": 1});
        assert_eq!(hash_json(&a), hash_json(&b));
        assert_ne!(hash_json(&a), hash_json(&json!({"b": 1, "a": {"y": [2, 1], "x": "s"}})));
        assert_eq!(hash_json(&a).len(), 64);
    }

    #[test]
    fn changes_are_added_modified_and_deleted_keys() {
        let previous = Digests::from([("A".into(), "1".into()), ("B".into(), "2".into()), ("C".into(), "3".into())]);
        let current = Digests::from([("A".into(), "1".into()), ("B".into(), "9".into()), ("D".into(), "4".into())]);
        let changes = ConfigChanges::between(&previous, &current);
        assert_eq!(changes.added, ["D"]);
        assert_eq!(changes.modified, ["B"]);
        assert_eq!(changes.deleted, ["C"]);
        assert!(ConfigChanges::between(&current, &current).is_empty());
    }

    #[test]
    fn resource_version_alone_does_not_change_a_digest() {
        let load = |rv: &str, ip: &str| {
            let mut report = meshlens_model::mesh::LoadReport::default();
            report.parse_str(
                "t.yaml",
                &format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, resourceVersion: '{rv}'}}\nstatus: {{podIP: {ip}}}\n"
                ),
            );
            resource_digests(&report.resources)
        };
        assert_eq!(load("1", "10.0.0.1"), load("2", "10.0.0.1"));
        assert_ne!(load("1", "10.0.0.1"), load("1", "10.0.0.2"));
        assert_eq!(load("1", "10.0.0.1").keys().collect::<Vec<_>>(), ["Pod default/p"]);
    }
}
