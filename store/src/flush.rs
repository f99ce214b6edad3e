//! Turning buffered rows into Parquet files.
//!
//! Rows of one flush are sorted by the table's time column and cut at hour boundaries; each hour becomes
//! `parquet/<table>/<YYYY-MM-DD>/<HH>/<wal seq>.parquet`. The flush's WAL sequence number names the file,
//! so a retried flush of the same rows overwrites rather than duplicates. Files are written under a
//! temporary name, fsynced and renamed; they become visible only when the catalog commit that lists
//! them succeeds (see `Shared::flush`).

use crate::catalog::NewFile;
use crate::error::{Result, StoreError, arrow_err, io_err};
use crate::schema::Table;
use crate::wal::sync_dir;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub(crate) const HOUR_MICROS: i64 = 3_600_000_000;
/// Folder (under the data directory) of the Parquet files.
pub(crate) const PARQUET_DIR: &str = "parquet";
const TMP_SUFFIX: &str = ".tmp";

/// Columns whose values are (nearly) all distinct. Dictionary encoding only costs CPU on them: the
/// dictionary overflows and the writer falls back to plain encoding anyway.
const HIGH_CARDINALITY: [&str; 8] = [
    "timestamp",
    "request_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "downstream_remote_address",
    "start_time",
    "end_time",
];

/// The Parquet writer settings of the store: zstd level 1 (most of zstd's ratio at a fraction of its
/// CPU), page-level statistics so readers skip pages and row groups by time or any other column, no
/// dictionary for high-cardinality columns, and the time sort order recorded in the footer. Public so
/// that benchmarks and exports write identical files.
pub fn parquet_writer_properties(table: Table, row_group_rows: usize) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(1).map_err(|cause| StoreError::Parquet { path: PathBuf::new(), cause })?;
    let time_index = table.schema().index_of(table.time_column()).map_err(arrow_err("locating the time column"))?;
    let mut builder = WriterProperties::builder();
    for field in table.schema().fields() {
        if HIGH_CARDINALITY.contains(&field.name().as_str()) {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    Ok(builder
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: time_index as i32,
            descending: false,
            nulls_first: false,
        }]))
        .build())
}

/// Relative path of the file holding `table`'s rows of the hour starting at `hour` for flush `seq`.
fn file_path(table: Table, hour: i64, seq: u64) -> Result<String> {
    let start = DateTime::<Utc>::from_timestamp_micros(hour)
        .ok_or_else(|| StoreError::Config(format!("timestamp {hour} µs is out of range")))?;
    Ok(format!("{PARQUET_DIR}/{}/{}/{seq:020}.parquet", table.name(), start.format("%Y-%m-%d/%H")))
}

/// Writes `batches` (all rows of one table in one flush) as one Parquet file per hour and returns what
/// the catalog needs to know about them. On error, files already written by this call are removed.
pub(crate) fn write_table(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    seq: u64,
    row_group_rows: usize,
) -> Result<Vec<NewFile>> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(Vec::new());
    }
    let schema = table.schema();
    let merged = concat_batches(&schema, batches).map_err(arrow_err(format!("merging {table} rows for a flush")))?;
    let time_index = schema.index_of(table.time_column()).map_err(arrow_err("locating the time column"))?;
    let sorted = sort_by_time(merged, time_index)?;
    let times = sorted.column(time_index).as_primitive::<TimestampMicrosecondType>().clone();
    let props = parquet_writer_properties(table, row_group_rows)?;

    let mut written: Vec<NewFile> = Vec::new();
    let mut start = 0;
    while start < sorted.num_rows() {
        let hour = times.value(start).div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let next_hour = hour + HOUR_MICROS;
        // Sorted, so the hour's rows are the run up to the first value of the next hour.
        let values = &times.values()[start..];
        let len = values.partition_point(|&t| t < next_hour);
        let slice = sorted.slice(start, len);
        let rel = file_path(table, hour, seq)?;
        let result = write_file(&data_dir.join(&rel), &slice, props.clone()).map(|size_bytes| NewFile {
            table,
            partition_hour: hour,
            path: rel,
            row_count: len as i64,
            size_bytes: size_bytes as i64,
            min_time: values[0],
            max_time: values[len - 1],
        });
        match result {
            Ok(file) => written.push(file),
            Err(e) => {
                remove_files(data_dir, &written);
                return Err(e);
            }
        }
        start += len;
    }
    Ok(written)
}

fn sort_by_time(batch: RecordBatch, time_index: usize) -> Result<RecordBatch> {
    let times = batch.column(time_index).as_primitive::<TimestampMicrosecondType>();
    // Telemetry mostly arrives in time order; skip the permutation when it already is.
    if times.null_count() == 0 && times.values().windows(2).all(|w| w[0] <= w[1]) {
        return Ok(batch);
    }
    let indices = sort_to_indices(times, None, None).map_err(arrow_err("sorting rows by time"))?;
    take_record_batch(&batch, &indices).map_err(arrow_err("sorting rows by time"))
}

/// Writes one file atomically: temp file, fsync, rename, fsync of the directory. Returns its size.
fn write_file(path: &Path, batch: &RecordBatch, props: WriterProperties) -> Result<u64> {
    let dir = path.parent().ok_or_else(|| StoreError::Config(format!("{} has no parent", path.display())))?;
    create_dir_durably(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(TMP_SUFFIX);
    let tmp = dir.join(tmp_name);
    let file = File::create(&tmp).map_err(io_err("creating Parquet file", &tmp))?;
    let parquet_err = |cause| StoreError::Parquet { path: tmp.clone(), cause };
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    let file = writer.into_inner().map_err(parquet_err)?;
    file.sync_all().map_err(io_err("syncing Parquet file", &tmp))?;
    let size = file.metadata().map_err(io_err("reading size of Parquet file", &tmp))?.len();
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("publishing Parquet file", path))?;
    sync_dir(dir)?;
    Ok(size)
}

/// Creates `dir` and its missing parents, fsyncing each parent so the new entries survive a crash.
fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().ok_or_else(|| StoreError::Config(format!("{} has no parent", dir.display())))?;
    create_dir_durably(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating directory", dir)(e)),
    }
}

/// Best-effort removal of files a failed flush wrote (they are not in the catalog, so nobody reads them;
/// leftovers are also cleaned at the next open).
pub(crate) fn remove_files(data_dir: &Path, files: &[NewFile]) {
    for f in files {
        let path = data_dir.join(&f.path);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an unpublished Parquet file");
        }
    }
}

/// Deletes a published file that the catalog no longer lists, then its hour and day folders when empty.
pub(crate) fn remove_published_file(data_dir: &Path, rel: &str) -> Result<()> {
    let path = data_dir.join(rel);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("deleting Parquet file", &path)(e)),
    }
    // `remove_dir` only removes empty folders; failing because one still has files is the normal case.
    let root = data_dir.join(PARQUET_DIR);
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(&root) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Files under `parquet/` that a crash left behind: temp files and published files the catalog does not
/// list (a flush that died between rename and commit). Returns absolute paths.
pub(crate) fn find_orphans(data_dir: &Path, known: &std::collections::HashSet<String>) -> Result<Vec<PathBuf>> {
    let mut orphans = Vec::new();
    let root = data_dir.join(PARQUET_DIR);
    if !root.exists() {
        return Ok(orphans);
    }
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            if entry.file_type().map_err(io_err("inspecting", &path))?.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(data_dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            if rel.ends_with(TMP_SUFFIX) || (rel.ends_with(".parquet") && !known.contains(&rel)) {
                orphans.push(path);
            }
        }
    }
    Ok(orphans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_partitioned_by_table_day_and_hour() {
        let hour = DateTime::parse_from_rfc3339("2025-03-01T07:00:00Z").unwrap().timestamp_micros();
        assert_eq!(
            file_path(Table::Spans, hour, 42).unwrap(),
            "parquet/spans/2025-03-01/07/00000000000000000042.parquet"
        );
    }
}
