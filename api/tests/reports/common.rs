//! Shared fixtures: a mesh with a STRICT namespace, a store (SQLite or a fresh PostgreSQL database per
//! test) holding mutual and plaintext requests into it, and the [`AppState`] over both.

#![allow(dead_code)] // each module uses a different subset

use chrono::{DateTime, TimeDelta, Utc};
use meshlens_api::{AppState, MeshSnapshot};
use meshlens_model::RequestRecord;
use meshlens_model::mesh::{LoadReport, MeshSettings};
use meshlens_model::record::{Direction, Mtls, Reporter};
use meshlens_store::{Store, StoreConfig};
use sqlx::Connection;
use std::sync::Arc;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `payments` requires STRICT mTLS; `ledger` serves it; `api-0` (payments) calls it with mTLS and `cron-7`
/// (batch, no sidecar) in plaintext.
pub const CONFIG: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: payments}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: payments}
spec:
  mtls: {mode: STRICT}
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: payments}
spec:
  selector: {app: ledger}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: ledger-0
  namespace: payments
  labels: {app: ledger, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: ledger}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-0
  namespace: payments
  labels: {app: api, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: api}
status: {podIP: 10.244.1.20}
---
apiVersion: v1
kind: Pod
metadata:
  name: cron-7
  namespace: batch
  labels: {app: cron}
spec: {serviceAccountName: cron}
status: {podIP: 10.244.7.7}
";

pub fn snapshot() -> MeshSnapshot {
    let mut load = LoadReport::default();
    load.parse_str("config.yaml", CONFIG);
    assert!(load.errors.is_empty(), "fixture config: {:?}", load.errors);
    MeshSnapshot::new(load, MeshSettings::default())
}

/// Server-side records of requests into `ledger`: `mutual` from payments/api-0, `plaintext` from
/// batch/cron-7, spread over the `minutes` before `end`.
pub fn records(end: DateTime<Utc>, mutual: usize, plaintext: usize) -> Vec<RequestRecord> {
    let total = mutual + plaintext;
    (0..total)
        .map(|i| {
            let (namespace, workload, mtls) =
                if i < mutual { ("payments", "api-0", Mtls::Mutual) } else { ("batch", "cron-7", Mtls::Plaintext) };
            RequestRecord {
                timestamp: end - TimeDelta::seconds(10 + i as i64),
                duration_ms: Some(12),
                method: Some("POST".into()),
                path: Some("/v1/entries".into()),
                protocol: Some("HTTP/1.1".into()),
                authority: Some("ledger.payments:8080".into()),
                status: Some(201),
                request_id: Some(format!("req-{}-{i}", end.timestamp_micros())),
                reporter: Reporter::Destination,
                direction: Direction::Inbound,
                upstream_cluster: Some("inbound|8080||".into()),
                destination_service: Some("ledger.payments.svc.cluster.local".into()),
                destination_port: Some(8080),
                destination_namespace: Some("payments".into()),
                destination_workload: Some("ledger-0".into()),
                source_namespace: Some(namespace.into()),
                source_workload: Some(workload.into()),
                mtls,
                ..Default::default()
            }
        })
        .collect()
}

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

/// A data directory and catalog for one test; [`TestEnv::cleanup`] drops the PostgreSQL database.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub database_url: Option<String>,
    pg: Option<(String, String)>,
}

fn pg_admin_url() -> String {
    std::env::var("MESHLENS_TEST_PG_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
}

impl TestEnv {
    pub async fn new(backend: Backend) -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => TestEnv { dir, database_url: None, pg: None },
            Backend::Postgres => {
                let admin = pg_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e} (see .ci/run)"));
                let name = format!("meshlens_reports_{}_{}", std::process::id(), fastrand::u64(..) & 0xffff_ffff_ffff);
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                TestEnv { dir, database_url: Some(format!("{base}/{name}")), pg: Some((admin, name)) }
            }
        }
    }

    pub fn config(&self) -> StoreConfig {
        StoreConfig { database_url: self.database_url.clone(), ..StoreConfig::new(self.dir.path()) }
    }

    /// A writable store holding `mutual` + `plaintext` requests ending now, and the state over it.
    pub async fn state(&self, mutual: usize, plaintext: usize) -> AppState {
        let store = Store::open(self.config()).await.expect("open store");
        if mutual + plaintext > 0 {
            store.append_requests(records(Utc::now(), mutual, plaintext)).await.expect("append");
        }
        AppState::new(Arc::new(store), snapshot()).expect("executor")
    }

    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg {
            let mut conn = sqlx::PgConnection::connect(admin).await.expect("reconnect to drop test database");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await
                .expect("drop test database");
        }
    }
}

/// A report of the last hour over `state`, not stored.
pub async fn report(state: &AppState) -> meshlens_api::reports::Report {
    let window = meshlens_api::analysis::window_until_now(Some(TimeDelta::hours(1)));
    meshlens_api::reports::generate(state, None, window, None, None).await.expect("report")
}
