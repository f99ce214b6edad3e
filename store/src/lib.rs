//! meshlens' durable telemetry store: request records and spans go in through a write-ahead log, are
//! served from memory at once, move to hour-partitioned Parquet files listed in a SQL catalog, and are
//! queried with SQL through DataFusion (the design of InfluxDB 3 and GreptimeDB, at the scale of one
//! node).
//!
//! - **Write path**: [`Store::append_requests`] / [`Store::append_spans`] return once the batch is in the
//!   WAL (length-prefixed, CRC32-checked records, fsynced, one fsync shared by concurrent appends) and
//!   visible to queries. A memory budget (bytes of Arrow data) bounds what is held before a flush; past
//!   it appends wait briefly for a flush to make room, then fail with [`StoreError::Busy`].
//! - **Flush**: by row count, size (half the memory budget), age, or an append waiting for room, buffered rows become zstd Parquet files sorted by time under
//!   `<data-dir>/parquet/<table>/<YYYY-MM-DD>/<HH>/` (request files by direction, then time, so that a scan
//!   of one side skips the other's pages). A file is visible only once its catalog row
//!   commits, in the same transaction as the WAL checkpoint it covers; WAL segments are deleted after.
//! - **Recovery**: opening replays the WAL after the checkpoint, truncates a torn tail, quarantines
//!   damaged records in `<data-dir>/wal/quarantine/` and reports it all ([`RecoveryReport`]).
//! - **Catalog**: SQLite (`<data-dir>/meshlens.db`, default) or PostgreSQL, migrated at start-up from
//!   `migrations/{sqlite,postgres}`; other crates keep their tables there too ([`Store::catalog`]).
//! - **Query**: tables `requests` and `spans` unite catalog-pruned Parquet files (filter and projection
//!   push-down) with in-memory rows; [`Store::sql`] accepts read-only statements only.
//! - **Config history**: [`config_history::ConfigHistory`] records each change of the mesh configuration
//!   in force as a numbered version (what changed, when, content hash) in the same database.
//! - **Retention**: [`Store::apply_retention`] drops hour partitions older than a maximum age; with
//!   [`StoreConfig::retention`] set, the flusher does so at open and every 5 minutes.

mod buffer;
pub mod catalog;
mod config;
pub mod config_history;
mod error;
mod flush;
mod query;
mod retention;
pub mod schema;
mod store;
pub mod synth;
mod wal;

pub use catalog::{Catalog, FileEntry};
pub use config::{StoreConfig, WalCompression};
pub use error::{Result, StoreError};
pub use flush::parquet_writer_properties;
pub use query::read_only_sql_options;
pub use retention::RetentionReport;
pub use schema::Table;
pub use store::{FlushReport, QueryOutput, Store, StoreStats};
pub use wal::{QUARANTINE_DIR, Quarantined, RecoveryReport, TornTail};

/// The Arrow and DataFusion versions the store is built with, for callers that format or post-process
/// query results without depending on them directly.
pub use {arrow, datafusion};
