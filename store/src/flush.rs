//! Turning buffered rows into Parquet files.
//!
//! Rows of one flush are ordered by the table's time column and cut at hour boundaries; each hour becomes
//! `parquet/<table>/<YYYY-MM-DD>/<HH>/<wal seq>-<part>.parquet` (one part, or several encoded in parallel
//! when the hour holds more than a row group per core). Within a file, rows are ordered by the table's
//! cluster column, if it has one, then by time (`Table::cluster_column`), so that a scan of one value
//! skips the other values' pages. The flush's WAL sequence number names the files,
//! so a retried flush of the same rows overwrites rather than duplicates. Files are written under a
//! temporary name, fsynced and renamed; they become visible only when the catalog commit that lists
//! them succeeds (see `Shared::flush`).

use crate::catalog::NewFile;
use crate::error::{Result, StoreError, arrow_err, io_err};
use crate::schema::Table;
use crate::wal::sync_dir;
use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::compute::{SortColumn, interleave, interleave_record_batch, lexsort_to_indices};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let cluster_index = table
        .cluster_column()
        .map(|c| table.schema().index_of(c).map_err(arrow_err("locating the cluster column")))
        .transpose()?;
    let sorting = cluster_index
        .into_iter()
        .chain([time_index])
        .map(|index| SortingColumn { column_idx: index as i32, descending: false, nulls_first: false })
        .collect();
    Ok(builder
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_sorting_columns(Some(sorting))
        .build())
}

/// Rows per batch handed to the Parquet writer.
const FILE_CHUNK_ROWS: usize = 8192;

/// One buffered row: its time, and where it is (batch index, row index) among the flush's batches.
/// A flush orders and cuts these instead of the rows themselves, so that it never holds a second copy of
/// its rows: each file's rows are assembled a chunk at a time as its writer consumes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowRef {
    time: i64,
    batch: usize,
    row: usize,
}

/// Every row of `batches`, in time order. Telemetry batches are mostly sorted runs, which the stable
/// merge sort takes in about linear time.
fn time_order(batches: &[RecordBatch], time_index: usize) -> Vec<RowRef> {
    let mut rows: Vec<RowRef> = batches
        .iter()
        .enumerate()
        .flat_map(|(batch, b)| {
            times(b, time_index).iter().enumerate().map(move |(row, &time)| RowRef { time, batch, row })
        })
        .collect();
    rows.sort_by_key(|r| r.time);
    rows
}

/// Cuts time-ordered rows at hour boundaries: `(hour start, rows)` per hour.
fn split_by_hour(ordered: &[RowRef]) -> Vec<(i64, &[RowRef])> {
    let mut hours = Vec::new();
    let mut rest = ordered;
    while let Some(first) = rest.first() {
        let hour = first.time.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let (this, later) = rest.split_at(rest.partition_point(|r| r.time < hour + HOUR_MICROS));
        hours.push((hour, this));
        rest = later;
    }
    hours
}

/// The rows of one file (`part`, in time order) in file order: by the table's cluster column, then by
/// time; a table without a cluster column keeps time order. Only the two key columns are gathered.
fn in_file_order(table: Table, batches: &[RecordBatch], part: &[RowRef]) -> Result<Vec<(usize, usize)>> {
    let positions: Vec<(usize, usize)> = part.iter().map(|r| (r.batch, r.row)).collect();
    let Some(column) = table.cluster_column() else { return Ok(positions) };
    let ordering = || arrow_err(format!("ordering {table} rows by {column}"));
    let cluster_index = table.schema().index_of(column).map_err(arrow_err("locating the cluster column"))?;
    let clusters: Vec<&dyn Array> = batches.iter().map(|b| b.column(cluster_index).as_ref()).collect();
    let keys = [
        SortColumn { values: interleave(&clusters, &positions).map_err(ordering())?, options: None },
        SortColumn { values: Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.time))), options: None },
    ];
    let order = lexsort_to_indices(&keys, None).map_err(ordering())?;
    Ok(order.values().iter().map(|&i| positions[i as usize]).collect())
}

/// Relative path of part `part` of `table`'s rows of the hour starting at `hour`, written by flush `seq`.
fn file_path(table: Table, hour: i64, seq: u64, part: usize) -> Result<String> {
    let start = DateTime::<Utc>::from_timestamp_micros(hour)
        .ok_or_else(|| StoreError::Config(format!("timestamp {hour} µs is out of range")))?;
    Ok(format!("{PARQUET_DIR}/{}/{}/{seq:020}-{part:03}.parquet", table.name(), start.format("%Y-%m-%d/%H")))
}

fn times(batch: &RecordBatch, time_index: usize) -> &[i64] {
    batch.column(time_index).as_primitive::<TimestampMicrosecondType>().values()
}

/// Writes `batches` (all rows of one table in one flush) as Parquet files, at least one per hour, and
/// returns what the catalog needs to know about them. Large hours are cut into parts that are encoded
/// in parallel (Parquet encoding is the most expensive step of ingest). On error, files already written
/// by this call are removed.
pub(crate) fn write_table(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    seq: u64,
    row_group_rows: usize,
) -> Result<Vec<NewFile>> {
    let time_index = table.schema().index_of(table.time_column()).map_err(arrow_err("locating the time column"))?;
    let ordered = time_order(batches, time_index);
    if ordered.is_empty() {
        return Ok(Vec::new());
    }
    let props = parquet_writer_properties(table, row_group_rows)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // (file path, hour, rows of the part in time order) for every file to write.
    let mut jobs: Vec<(String, i64, &[RowRef])> = Vec::new();
    for (hour, rows) in split_by_hour(&ordered) {
        // Each part gets at least one full row group, so splitting never shrinks row groups.
        let count = (rows.len() / row_group_rows).clamp(1, threads);
        for (part, rows) in rows.chunks(rows.len().div_ceil(count)).enumerate() {
            jobs.push((file_path(table, hour, seq, part)?, hour, rows));
        }
    }

    let results: Vec<Result<NewFile>> =
        std::thread::scope(|scope| {
            let mut results = Vec::with_capacity(jobs.len());
            for chunk in jobs.chunks(threads) {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&(ref rel, hour, rows)| {
                        let props = props.clone();
                        scope.spawn(move || {
                            let order = in_file_order(table, batches, rows)?;
                            let sources: Vec<&RecordBatch> = batches.iter().collect();
                            let chunks = order.chunks(FILE_CHUNK_ROWS).map(|chunk| {
                                interleave_record_batch(&sources, chunk)
                                    .map_err(arrow_err(format!("assembling {table} rows for a file")))
                            });
                            let size = write_file(&data_dir.join(rel), table, chunks, props)?;
                            Ok(NewFile {
                                table,
                                partition_hour: hour,
                                path: rel.clone(),
                                row_count: rows.len() as i64,
                                size_bytes: size as i64,
                                // The part is in time order: its first and last rows bound its time range.
                                min_time: rows.first().map_or(0, |r| r.time),
                                max_time: rows.last().map_or(0, |r| r.time),
                            })
                        })
                    })
                    .collect();
                for handle in handles {
                    results.push(handle.join().unwrap_or_else(|_| {
                        Err(StoreError::Task { task: "parquet encoder", detail: "panicked".into() })
                    }));
                }
            }
            results
        });
    let (written, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let written: Vec<NewFile> = written.into_iter().flatten().collect();
    if let Some(Err(e)) = failed.into_iter().next() {
        remove_files(data_dir, &written);
        return Err(e);
    }
    Ok(written)
}

/// Writes one file of `table` atomically: temp file, fsync, rename, fsync of the directory. Returns its
/// size.
fn write_file(
    path: &Path,
    table: Table,
    batches: impl Iterator<Item = Result<RecordBatch>>,
    props: WriterProperties,
) -> Result<u64> {
    let dir = path.parent().ok_or_else(|| StoreError::Config(format!("{} has no parent", path.display())))?;
    create_dir_durably(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(TMP_SUFFIX);
    let tmp = dir.join(tmp_name);
    let file = File::create(&tmp).map_err(io_err("creating Parquet file", &tmp))?;
    let parquet_err = |cause| StoreError::Parquet { path: tmp.clone(), cause };
    let mut writer = ArrowWriter::try_new(file, table.schema(), Some(props)).map_err(parquet_err)?;
    for batch in batches {
        writer.write(&batch?).map_err(parquet_err)?;
    }
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
    use arrow::array::TimestampMicrosecondArray;

    fn batch(times: &[i64]) -> RecordBatch {
        let ts = TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC");
        let ids = Int64Array::from_iter_values(times.iter().copied());
        RecordBatch::try_from_iter([("start_time", Arc::new(ts) as _), ("id", Arc::new(ids) as _)]).unwrap()
    }

    fn all_times(rows: &[RowRef]) -> Vec<i64> {
        rows.iter().map(|r| r.time).collect()
    }

    #[test]
    fn rows_of_interleaved_batches_come_out_in_time_order() {
        let batches = [batch(&[30, 40]), batch(&[10, 20]), batch(&[40, 50, 5])];
        let ordered = time_order(&batches, 0);
        assert_eq!(all_times(&ordered), [5, 10, 20, 30, 40, 40, 50]);
        assert_eq!(ordered[0], RowRef { time: 5, batch: 2, row: 2 });
        assert_eq!((ordered[4].batch, ordered[5].batch), (0, 2), "ties keep the batches' order");
    }

    #[test]
    fn hours_are_cut_at_their_boundaries() {
        let h = HOUR_MICROS;
        let ordered = time_order(&[batch(&[5, h + 1]), batch(&[3, 2 * h, 2 * h + 7])], 0);
        let hours: Vec<(i64, Vec<i64>)> =
            split_by_hour(&ordered).into_iter().map(|(hour, rows)| (hour, all_times(rows))).collect();
        assert_eq!(hours, [(0, vec![3, 5]), (h, vec![h + 1]), (2 * h, vec![2 * h, 2 * h + 7])]);
    }

    #[test]
    fn request_files_are_ordered_by_direction_then_time() {
        use meshlens_model::{Direction, RequestRecord};
        let record = |micros: i64, direction| RequestRecord {
            timestamp: DateTime::<Utc>::from_timestamp_micros(micros).unwrap(),
            direction,
            ..Default::default()
        };
        let (inbound, outbound) = (Direction::Inbound, Direction::Outbound);
        let batches = [
            crate::schema::requests_to_batch(&[record(1, outbound), record(4, inbound)]).unwrap(),
            crate::schema::requests_to_batch(&[record(2, inbound), record(3, outbound)]).unwrap(),
        ];
        let time_index = Table::Requests.schema().index_of("timestamp").unwrap();
        let ordered = time_order(&batches, time_index);
        let order = in_file_order(Table::Requests, &batches, &ordered).unwrap();
        assert_eq!(order, [(1, 0), (0, 1), (0, 0), (1, 1)], "inbound 2, 4, then outbound 1, 3");
        let spans = in_file_order(Table::Spans, &batches, &ordered).unwrap();
        assert_eq!(spans, [(0, 0), (1, 0), (1, 1), (0, 1)], "spans have no cluster column: time order");
    }

    #[test]
    fn file_paths_are_partitioned_by_table_day_and_hour() {
        let hour = DateTime::parse_from_rfc3339("2025-03-01T07:00:00Z").unwrap().timestamp_micros();
        assert_eq!(
            file_path(Table::Spans, hour, 42, 1).unwrap(),
            "parquet/spans/2025-03-01/07/00000000000000000042-001.parquet"
        );
    }
}
