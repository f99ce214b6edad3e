//! Retention: dropping whole hour partitions older than a maximum age.
//!
//! The catalog rows go first (in one statement, under the commit lock, so a query plans either with or
//! without a partition, never half of it), then the files. A crash in between leaves unlisted files that
//! the next open deletes as orphans. A query planned before the deletion that is still reading a dropped
//! file fails; retention horizons are hours, so that only hits queries over data at the very edge.

use crate::error::Result;
use crate::flush;
use crate::store::Shared;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What `Store::apply_retention` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Partitions that ended at or before this instant were dropped.
    pub cutoff: DateTime<Utc>,
    pub files_removed: usize,
    pub rows_removed: u64,
    /// Files whose catalog row is gone but that could not be deleted (reported, and retried as orphans at
    /// the next open).
    pub files_not_deleted: usize,
}

pub(crate) async fn apply(shared: &Arc<Shared>, max_age: Duration) -> Result<RetentionReport> {
    let age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now().checked_sub_signed(age).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let removed = {
        let _commit = shared.commit_lock.write().await;
        shared.catalog.remove_partitions_before(cutoff.timestamp_micros()).await?
    };
    let data_dir = shared.data_dir.clone();
    let paths: Vec<String> = removed.iter().map(|f| f.path.clone()).collect();
    let not_deleted = tokio::task::spawn_blocking(move || {
        let mut failed = 0;
        for path in paths {
            if let Err(e) = flush::remove_published_file(&data_dir, &path) {
                tracing::warn!(error = %e, "retention could not delete a dropped file");
                failed += 1;
            }
        }
        failed
    })
    .await
    .map_err(|e| crate::error::StoreError::Task { task: "retention", detail: e.to_string() })?;
    let report = RetentionReport {
        cutoff,
        files_removed: removed.len(),
        rows_removed: removed.iter().map(|f| f.row_count as u64).sum(),
        files_not_deleted: not_deleted,
    };
    tracing::info!(cutoff = %report.cutoff, files = report.files_removed, rows = report.rows_removed, "retention applied");
    Ok(report)
}
