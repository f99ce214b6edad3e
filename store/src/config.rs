//! Store configuration. Field docs are user documentation: they end up in `--help` texts of the commands
//! that expose them.

use crate::error::{Result, StoreError};
use std::path::PathBuf;
use std::time::Duration;

/// How the store is laid out and when it flushes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory for the write-ahead log (`wal/`), the Parquet files (`parquet/`) and, unless
    /// `database_url` says otherwise, the SQLite catalog `meshlens.db`. Created if missing. Default
    /// `./meshlens-data`.
    pub data_dir: PathBuf,
    /// Catalog database. Unset: SQLite at `<data_dir>/meshlens.db`. `postgres://user@host:port/db` (or
    /// `postgresql://`): PostgreSQL. `sqlite:PATH` / `sqlite://PATH`: a SQLite file elsewhere.
    pub database_url: Option<String>,
    /// Write buffered rows to Parquet once this many are waiting (both tables together). Default 65 536.
    pub flush_rows: usize,
    /// Write buffered rows to Parquet once the oldest has waited this long, however few they are.
    /// Default 10 s.
    pub flush_interval: Duration,
    /// Most bytes of rows kept in memory (waiting for the WAL, buffered, or being flushed), counted as the
    /// size of their Arrow arrays. An append that would go past it waits for a flush to make room (see
    /// `busy_wait`). A flush starts once half of it is buffered, however few rows that is, so that appends
    /// find room again as soon as that flush ends. The process needs about twice this much in all (the
    /// Parquet encoders, the receivers and the query engine come on top). Default 64 MiB.
    pub memory_budget_bytes: usize,
    /// How long an append waits for room in the memory budget before it fails with `StoreError::Busy`.
    /// Waiting holds the append's rows (and the sender's request) in memory meanwhile; zero fails at once.
    /// Default 2 s, several times what a flush of half the default budget takes.
    pub busy_wait: Duration,
    /// Start a new WAL segment once the current one reaches this size. Segments are deleted whole after
    /// a flush covers them, so smaller segments free disk sooner. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Compression of WAL records. The WAL carries every row uncompressed otherwise (about 750 bytes per
    /// request record), so on disks slower than the CPU it is the ingest bottleneck; LZ4 trades a little
    /// CPU for a several-fold smaller WAL. Default LZ4.
    pub wal_compression: WalCompression,
    /// Most rows per Parquet row group (the unit that statistics prune and that scans parallelize on).
    /// Default 131 072.
    pub row_group_rows: usize,
    /// Drop the hour partitions that ended more than this long ago (catalog rows first, then files),
    /// once at open and then every 5 minutes. Rows still in memory are dropped after they are flushed.
    /// Config history, reports, schedules and tokens are never affected. Unset (the default): keep
    /// everything.
    pub retention: Option<Duration>,
}

impl StoreConfig {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            database_url: None,
            flush_rows: 65_536,
            flush_interval: Duration::from_secs(10),
            memory_budget_bytes: 64 << 20,
            busy_wait: Duration::from_secs(2),
            wal_segment_bytes: 64 << 20,
            wal_compression: WalCompression::Lz4,
            row_group_rows: 131_072,
            retention: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(StoreError::Config(m));
        if self.flush_rows == 0 || self.row_group_rows == 0 || self.wal_segment_bytes == 0 {
            return fail("flush_rows, row_group_rows and wal_segment_bytes must be positive".into());
        }
        if self.memory_budget_bytes == 0 {
            return fail("memory_budget_bytes must be positive".into());
        }
        if self.flush_interval.is_zero() {
            return fail("flush_interval must be positive".into());
        }
        if self.retention.is_some_and(|age| age < Duration::from_secs(3600)) {
            return fail("retention must be at least 1h: the store drops whole hour partitions".into());
        }
        Ok(())
    }
}

/// Compression of WAL records (Arrow IPC buffer compression). Recovery reads every setting, so it can be
/// changed between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalCompression {
    /// Raw Arrow buffers: least CPU, most disk bandwidth.
    None,
    /// LZ4 frames: fast; shrinks the repetitive columns of telemetry several-fold.
    #[default]
    Lz4,
    /// zstd level 1: smaller than LZ4 (it also squeezes random hex ids), at more CPU.
    Zstd,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::new("./meshlens-data")
    }
}

/// Where the catalog lives, decided from `database_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CatalogLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl CatalogLocation {
    pub(crate) fn from_config(config: &StoreConfig, data_dir: &std::path::Path) -> Result<Self> {
        let Some(url) = config.database_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(CatalogLocation::Sqlite(data_dir.join("meshlens.db")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(CatalogLocation::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            return Ok(CatalogLocation::Sqlite(PathBuf::from(path)));
        }
        Err(StoreError::Config(format!(
            "database URL {} is neither postgres:// nor sqlite:",
            crate::catalog::redact_url(url)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_location_follows_the_url() {
        let mut config = StoreConfig::new("/d");
        let dir = std::path::Path::new("/d");
        assert_eq!(
            CatalogLocation::from_config(&config, dir).unwrap(),
            CatalogLocation::Sqlite("/d/meshlens.db".into())
        );
        config.database_url = Some("postgresql://u@h/db".into());
        assert!(matches!(CatalogLocation::from_config(&config, dir).unwrap(), CatalogLocation::Postgres(_)));
        config.database_url = Some("sqlite:///x/c.db".into());
        assert_eq!(CatalogLocation::from_config(&config, dir).unwrap(), CatalogLocation::Sqlite("/x/c.db".into()));
        config.database_url = Some("mysql://h/db".into());
        assert!(CatalogLocation::from_config(&config, dir).is_err());
        assert!(StoreConfig { memory_budget_bytes: 0, ..StoreConfig::new("/d") }.validate().is_err());
    }
}
