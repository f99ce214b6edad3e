//! Test harness shared by the store's integration tests: one data directory and, for PostgreSQL, one
//! freshly created database per test.

#![allow(dead_code)] // each test binary uses a different subset of the helpers

use meshlens_store::arrow::util::pretty::pretty_format_batches;
use meshlens_store::{Store, StoreConfig};
use sqlx::Connection;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed `async fn name(backend: Backend)`.
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

/// A data directory and catalog for one test. Call [`TestEnv::cleanup`] at the end (drops the database).
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
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin}: {e}\n\
                         The store's tests run against SQLite and PostgreSQL. Start the server with\n  \
                         pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                         or set MESHLENS_TEST_PG_URL to a server where this user may CREATE DATABASE."
                    )
                });
                let name = format!("meshlens_test_{}_{}", std::process::id(), fastrand::u64(..) & 0xffff_ffff_ffff);
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                let url = format!("{base}/{name}");
                TestEnv { dir, database_url: Some(url), pg: Some((admin, name)) }
            }
        }
    }

    pub fn config(&self) -> StoreConfig {
        StoreConfig { database_url: self.database_url.clone(), ..StoreConfig::new(self.dir.path()) }
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

/// The single integer a query returns.
pub async fn scalar(store: &Store, sql: &str) -> i64 {
    let out = store.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batch = out.batches.iter().find(|b| b.num_rows() > 0).expect("one row");
    let column =
        meshlens_store::arrow::compute::cast(batch.column(0), &meshlens_store::arrow::datatypes::DataType::Int64)
            .expect("integer result");
    column.as_any().downcast_ref::<meshlens_store::arrow::array::Int64Array>().expect("int64").value(0)
}

/// A query's result as a printed table (for comparing results across flush and reopen).
pub async fn table(store: &Store, sql: &str) -> String {
    let out = store.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&out.batches).expect("format").to_string()
}
