//! The SQL catalog: which Parquet files exist, what they cover, and the WAL checkpoint.
//!
//! Backed by SQLite (embedded default, `<data-dir>/meshlens.db` in WAL journal mode) or PostgreSQL. The
//! migrations in `migrations/sqlite` and `migrations/postgres` are embedded and applied at start-up; other
//! crates add their tables there and reach the pool through [`Catalog`]'s variants. Every statement here is
//! written once with `$N` placeholders, which both SQLite and PostgreSQL accept.

use crate::error::{Result, StoreError};
use crate::schema::Table;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::time::Duration;

/// The relational database behind the store. Public so that other crates can run their own queries on
/// the same database (their tables come from the same migration folders).
#[derive(Debug, Clone)]
pub enum Catalog {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool. The body is written once and type-checked for
/// each backend.
macro_rules! dispatch {
    ($self:expr, $pool:ident => $body:expr) => {
        match $self {
            Catalog::Sqlite($pool) => $body,
            Catalog::Postgres($pool) => $body,
        }
    };
}

/// One row of `parquet_files`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FileEntry {
    pub id: i64,
    pub table_name: String,
    /// Start of the hour partition, microseconds since the epoch.
    pub partition_hour: i64,
    /// Relative to the data directory.
    pub path: String,
    pub row_count: i64,
    pub size_bytes: i64,
    /// Time-column range of the file, microseconds since the epoch, inclusive.
    pub min_time: i64,
    pub max_time: i64,
    pub wal_seq: i64,
}

/// A file a flush wrote and is about to publish.
#[derive(Debug, Clone)]
pub(crate) struct NewFile {
    pub table: Table,
    pub partition_hour: i64,
    pub path: String,
    pub row_count: i64,
    pub size_bytes: i64,
    pub min_time: i64,
    pub max_time: i64,
}

/// Files of one table overlapping a time range, up to a WAL position.
const FILES_IN_RANGE: &str = "SELECT id, table_name, partition_hour, path, row_count, size_bytes, min_time, max_time, \
    wal_seq FROM parquet_files WHERE table_name = $1 AND max_time >= $2 AND min_time <= $3 AND wal_seq <= $4 \
    ORDER BY min_time, id";

/// Removes the password from a connection URL for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let slash = if rest.contains('/') { "/" } else { "" };
            format!("{scheme}://{user}@{host}{slash}{tail}")
        }
        None => url.to_owned(),
    }
}

impl Catalog {
    /// Opens (creating if missing) the embedded SQLite catalog at `path`.
    pub async fn open_sqlite(path: &Path, read_only: bool) -> Result<Catalog> {
        let mut options =
            SqliteConnectOptions::new().filename(path).busy_timeout(Duration::from_secs(10)).foreign_keys(true);
        options = if read_only {
            // A reader must not change the journal mode (a write); the writer already set WAL.
            options.read_only(true)
        } else {
            // FULL: a committed flush must survive power loss, because the WAL segments it covers are
            // deleted right after the commit.
            options.create_if_missing(true).journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Full)
        };
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(|cause| {
            StoreError::Catalog { backend: "sqlite", context: format!("opening {}", path.display()), cause }
        })?;
        Ok(Catalog::Sqlite(pool))
    }

    /// Connects to PostgreSQL.
    pub async fn connect_postgres(url: &str) -> Result<Catalog> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|cause| StoreError::Catalog {
                backend: "postgres",
                context: format!("connecting to {}", redact_url(url)),
                cause,
            })?;
        Ok(Catalog::Postgres(pool))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Catalog::Sqlite(_) => "sqlite",
            Catalog::Postgres(_) => "postgres",
        }
    }

    fn err(&self, context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
        let backend = self.backend();
        let context = context.to_owned();
        move |cause| StoreError::Catalog { backend, context, cause }
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<()> {
        let backend = self.backend();
        match self {
            Catalog::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await,
            Catalog::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await,
        }
        .map_err(|cause| StoreError::Migrate { backend, cause })
    }

    /// Highest WAL sequence number whose rows are in Parquet.
    pub async fn checkpoint(&self) -> Result<u64> {
        let sql = "SELECT flushed_seq FROM wal_checkpoint WHERE id = 1";
        let seq: i64 = dispatch!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
            .map_err(self.err("reading the WAL checkpoint (was the store ever opened for writing?)"))?;
        Ok(seq as u64)
    }

    /// Publishes the files of one flush and moves the checkpoint to `seq`, in one transaction.
    pub(crate) async fn commit_flush(&self, files: &[NewFile], seq: u64) -> Result<()> {
        let insert = "INSERT INTO parquet_files \
            (table_name, partition_hour, path, row_count, size_bytes, min_time, max_time, wal_seq) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let checkpoint = "UPDATE wal_checkpoint SET flushed_seq = $1, updated_at = CURRENT_TIMESTAMP \
            WHERE id = 1 AND flushed_seq < $1";
        let seq = seq as i64;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await.map_err(self.err("starting a flush commit"))?;
            for f in files {
                sqlx::query(insert)
                    .bind(f.table.name())
                    .bind(f.partition_hour)
                    .bind(&f.path)
                    .bind(f.row_count)
                    .bind(f.size_bytes)
                    .bind(f.min_time)
                    .bind(f.max_time)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err(&format!("registering {}", f.path)))?;
            }
            sqlx::query(checkpoint).bind(seq).execute(&mut *tx).await.map_err(self.err("moving the WAL checkpoint"))?;
            tx.commit().await.map_err(self.err("committing a flush"))
        })
    }

    /// Files of `table` that may hold rows with time in `[from, to]` (inclusive bounds, microseconds;
    /// `None` = unbounded) and were published by flushes up to `max_wal_seq`.
    pub async fn files(
        &self,
        table: Table,
        from: Option<i64>,
        to: Option<i64>,
        max_wal_seq: Option<u64>,
    ) -> Result<Vec<FileEntry>> {
        let sql = FILES_IN_RANGE;
        let max_wal_seq = max_wal_seq.map_or(i64::MAX, |s| s as i64);
        dispatch!(self, pool => sqlx::query_as::<_, FileEntry>(sql)
            .bind(table.name())
            .bind(from.unwrap_or(i64::MIN))
            .bind(to.unwrap_or(i64::MAX))
            .bind(max_wal_seq)
            .fetch_all(pool)
            .await)
        .map_err(self.err(&format!("listing {table} files")))
    }

    /// Every file path in the catalog (relative to the data directory).
    pub(crate) async fn all_paths(&self) -> Result<Vec<String>> {
        let sql = "SELECT path FROM parquet_files";
        dispatch!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await).map_err(self.err("listing file paths"))
    }

    /// Deletes the rows of every partition that ends at or before `cutoff` (microseconds) and returns them.
    pub(crate) async fn remove_partitions_before(&self, cutoff: i64) -> Result<Vec<FileEntry>> {
        let sql = "DELETE FROM parquet_files WHERE partition_hour <= $1 RETURNING id, table_name, partition_hour, \
            path, row_count, size_bytes, min_time, max_time, wal_seq";
        let hour_start_limit = cutoff - crate::flush::HOUR_MICROS;
        dispatch!(self, pool => sqlx::query_as::<_, FileEntry>(sql).bind(hour_start_limit).fetch_all(pool).await)
            .map_err(self.err("removing expired partitions"))
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        dispatch!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact_url("postgres://postgres@127.0.0.1/test"), "postgres://postgres@127.0.0.1/test");
        assert_eq!(redact_url("postgres://u:p@h"), "postgres://u@h");
    }
}
