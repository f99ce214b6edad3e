//! The store's error type. Every variant carries enough context (path, table, backend) to act on the
//! message without a debugger.

use std::path::{Path, PathBuf};

/// Errors of the telemetry store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The in-memory budget is used up: unflushed rows plus rows waiting for the WAL would exceed
    /// `StoreConfig::memory_budget_bytes`, and no flush made room within `StoreConfig::busy_wait`. Nothing
    /// was written; retry after a short delay or shed load. All three numbers are bytes.
    #[error(
        "busy, retry later: {requested} bytes of rows would exceed the memory budget ({in_use} of {budget} bytes in use)"
    )]
    Busy { requested: usize, in_use: usize, budget: usize },

    /// The store was opened with `Store::open_read_only`; it answers queries but takes no writes.
    #[error("the store is open read-only")]
    ReadOnly,

    /// The store's background writer has stopped (the store is closing, or the writer thread died).
    #[error("the store is shut down")]
    Closed,

    /// Writing or syncing the WAL failed; the batch was not stored (retrying may succeed once the disk
    /// problem is gone).
    #[error("write-ahead log write failed, batch not stored: {0}")]
    WalWrite(String),

    /// Another process holds the data directory's lock file.
    #[error("data directory {} is in use by another process (lock file {})", .data_dir.display(), .lock_file.display())]
    Locked { data_dir: PathBuf, lock_file: PathBuf },

    /// A file-system operation failed.
    #[error("{action} {}: {cause}", .path.display())]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },

    /// A catalog (SQL) operation failed.
    #[error("catalog ({backend}): {context}: {cause}")]
    Catalog { backend: &'static str, context: String, cause: sqlx::Error },

    /// Applying the embedded migrations failed.
    #[error("catalog ({backend}): applying migrations: {cause}")]
    Migrate { backend: &'static str, cause: sqlx::migrate::MigrateError },

    /// Building, encoding or decoding Arrow data failed.
    #[error("arrow: {context}: {cause}")]
    Arrow { context: String, cause: arrow::error::ArrowError },

    /// Writing a Parquet file failed.
    #[error("parquet {}: {cause}", .path.display())]
    Parquet { path: PathBuf, cause: parquet::errors::ParquetError },

    /// Planning or running a query failed (includes statements rejected by the read-only guard).
    #[error("query: {0}")]
    Query(datafusion::error::DataFusionError),

    /// A batch handed to `Store::append_batch` does not have the table's schema.
    #[error("batch for table {table} does not match its schema: {detail}")]
    SchemaMismatch { table: &'static str, detail: String },

    /// The configuration cannot work (e.g. a database URL of an unknown scheme).
    #[error("invalid store configuration: {0}")]
    Config(String),

    /// A background task panicked or was cancelled.
    #[error("background task {task} failed: {detail}")]
    Task { task: &'static str, detail: String },
}

// Causes are part of each message (the project's convention) and therefore not also exposed as
// `Error::source`, which would print them twice in `{:#}` chains.
impl From<datafusion::error::DataFusionError> for StoreError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        StoreError::Query(e)
    }
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether the caller should retry the same call later (today only `Busy`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }
}

/// `map_err` helper: `.map_err(io_err("reading", &path))`.
pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |cause| StoreError::Io { action, path, cause }
}

/// `map_err` helper for Arrow errors.
pub(crate) fn arrow_err(context: impl Into<String>) -> impl FnOnce(arrow::error::ArrowError) -> StoreError {
    let context = context.into();
    move |cause| StoreError::Arrow { context, cause }
}
