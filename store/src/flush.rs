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
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{
    SortColumn, concat, concat_batches, interleave_record_batch, lexsort_to_indices, sort_to_indices, take_record_batch,
};
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

/// Rows per batch handed to the Parquet writer when a file's rows are reordered.
const FILE_CHUNK_ROWS: usize = 8192;

/// The rows of one file (`part`, in time order) in file order: by the table's cluster column, then by
/// time. Only the two key columns are copied to find the order; the reordered rows are assembled a chunk
/// at a time as the writer consumes them, so a flush never holds a second copy of its rows. A table
/// without a cluster column keeps the part as it is.
fn in_file_order<'a>(
    table: Table,
    part: &'a [RecordBatch],
    time_index: usize,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + 'a>> {
    let Some(column) = table.cluster_column() else { return Ok(Box::new(part.iter().cloned().map(Ok))) };
    let cluster_index = table.schema().index_of(column).map_err(arrow_err("locating the cluster column"))?;
    let ordering = arrow_err(format!("ordering {table} rows by {column}"));
    let key = |index: usize| {
        let columns: Vec<&dyn Array> = part.iter().map(|b| b.column(index).as_ref()).collect();
        concat(&columns).map_err(arrow_err(format!("ordering {table} rows by {column}")))
    };
    let keys = [
        SortColumn { values: key(cluster_index)?, options: None },
        SortColumn { values: key(time_index)?, options: None },
    ];
    let order = lexsort_to_indices(&keys, None).map_err(ordering)?;
    // (batch, row) of each row of the concatenated keys, then in file order.
    let positions: Vec<(usize, usize)> =
        part.iter().enumerate().flat_map(|(b, batch)| (0..batch.num_rows()).map(move |row| (b, row))).collect();
    let ordered: Vec<(usize, usize)> = order.values().iter().map(|&i| positions[i as usize]).collect();
    let sources: Vec<&RecordBatch> = part.iter().collect();
    Ok(Box::new((0..ordered.len()).step_by(FILE_CHUNK_ROWS).map(move |start| {
        let chunk = &ordered[start..(start + FILE_CHUNK_ROWS).min(ordered.len())];
        interleave_record_batch(&sources, chunk).map_err(arrow_err(format!("ordering {table} rows by {column}")))
    })))
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
    let ordered = order_by_time(table, batches, time_index)?;
    if ordered.is_empty() {
        return Ok(Vec::new());
    }
    let props = parquet_writer_properties(table, row_group_rows)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // (hour, rows of the part) for every file to write, in time order.
    let mut parts: Vec<(i64, Vec<RecordBatch>)> = Vec::new();
    for (hour, slices) in split_by_hour(&ordered, time_index) {
        let rows: usize = slices.iter().map(RecordBatch::num_rows).sum();
        // Each part gets at least one full row group, so splitting never shrinks row groups.
        let count = (rows / row_group_rows).clamp(1, threads);
        parts.extend(split_rows(slices, rows.div_ceil(count)).into_iter().map(|p| (hour, p)));
    }
    let mut numbering: Vec<(i64, usize)> = Vec::new();
    let jobs: Vec<(String, i64, Vec<RecordBatch>)> = parts
        .into_iter()
        .map(|(hour, rows)| {
            let part = numbering.iter().filter(|(h, _)| *h == hour).count();
            numbering.push((hour, part));
            file_path(table, hour, seq, part).map(|rel| (rel, hour, rows))
        })
        .collect::<Result<_>>()?;

    let results: Vec<Result<NewFile>> =
        std::thread::scope(|scope| {
            let mut results = Vec::with_capacity(jobs.len());
            for chunk in jobs.chunks(threads) {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(rel, hour, rows)| {
                        let props = props.clone();
                        scope.spawn(move || {
                            // The part is in time order: its first and last rows bound its time range.
                            let first = rows.first().map_or(0, |b| times(b, time_index)[0]);
                            let last = rows.last().map_or(0, |b| *times(b, time_index).last().unwrap_or(&0));
                            let ordered = in_file_order(table, rows, time_index)?;
                            let size = write_file(&data_dir.join(rel), table, ordered, props)?;
                            Ok(NewFile {
                                table,
                                partition_hour: *hour,
                                path: rel.clone(),
                                row_count: rows.iter().map(RecordBatch::num_rows).sum::<usize>() as i64,
                                size_bytes: size as i64,
                                min_time: first,
                                max_time: last,
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

/// The rows of `batches` as a list of batches in time order: each batch sorted, each starting at or
/// after the end of the previous one. Telemetry batches usually are sorted and cover consecutive time
/// ranges, possibly interleaved by concurrent appenders; then reordering whole batches is enough and no
/// row is copied. Otherwise everything is merged and sorted.
fn order_by_time(table: Table, batches: &[RecordBatch], time_index: usize) -> Result<Vec<RecordBatch>> {
    let mut nonempty: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let sorted_inside = nonempty.iter().all(|b| {
        let column = b.column(time_index);
        column.null_count() == 0 && times(b, time_index).windows(2).all(|w| w[0] <= w[1])
    });
    if sorted_inside {
        nonempty.sort_by_key(|b| times(b, time_index)[0]);
        let disjoint = nonempty.windows(2).all(|w| times(w[0], time_index).last() <= times(w[1], time_index).first());
        if disjoint {
            return Ok(nonempty.into_iter().cloned().collect());
        }
    }
    if nonempty.is_empty() {
        return Ok(Vec::new());
    }
    let schema = table.schema();
    let merged = concat_batches(&schema, nonempty).map_err(arrow_err(format!("merging {table} rows for a flush")))?;
    let indices = sort_to_indices(merged.column(time_index), None, None).map_err(arrow_err("sorting rows by time"))?;
    Ok(vec![take_record_batch(&merged, &indices).map_err(arrow_err("sorting rows by time"))?])
}

/// Cuts time-ordered batches at hour boundaries (zero-copy slices): `(hour start, slices)` per hour.
fn split_by_hour(ordered: &[RecordBatch], time_index: usize) -> Vec<(i64, Vec<RecordBatch>)> {
    let mut hours: Vec<(i64, Vec<RecordBatch>)> = Vec::new();
    for batch in ordered {
        let values = times(batch, time_index);
        let mut start = 0;
        while start < values.len() {
            let hour = values[start].div_euclid(HOUR_MICROS) * HOUR_MICROS;
            let len = values[start..].partition_point(|&t| t < hour + HOUR_MICROS);
            let slice = batch.slice(start, len);
            match hours.last_mut() {
                Some((h, slices)) if *h == hour => slices.push(slice),
                _ => hours.push((hour, vec![slice])),
            }
            start += len;
        }
    }
    hours
}

/// Regroups consecutive slices into parts of about `part_rows` rows (slicing batches where needed).
fn split_rows(slices: Vec<RecordBatch>, part_rows: usize) -> Vec<Vec<RecordBatch>> {
    let mut parts = vec![Vec::new()];
    let mut filled = 0;
    for batch in slices {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if filled == part_rows {
                parts.push(Vec::new());
                filled = 0;
            }
            let take = (batch.num_rows() - offset).min(part_rows - filled);
            if let Some(part) = parts.last_mut() {
                part.push(batch.slice(offset, take));
            }
            filled += take;
            offset += take;
        }
    }
    parts
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
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use std::sync::Arc;

    fn batch(times: &[i64]) -> RecordBatch {
        let ts = TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC");
        let ids = Int64Array::from_iter_values(times.iter().copied());
        RecordBatch::try_from_iter([("start_time", Arc::new(ts) as _), ("id", Arc::new(ids) as _)]).unwrap()
    }

    fn all_times(batches: &[RecordBatch]) -> Vec<i64> {
        batches.iter().flat_map(|b| times(b, 0).to_vec()).collect()
    }

    #[test]
    fn disjoint_sorted_batches_are_reordered_without_copying() {
        let batches = [batch(&[30, 40]), batch(&[10, 20]), batch(&[40, 50])];
        let ordered = order_by_time(Table::Spans, &batches, 0).unwrap();
        assert_eq!(ordered.len(), 3, "whole batches, no merge");
        assert_eq!(all_times(&ordered), [10, 20, 30, 40, 40, 50]);
    }

    #[test]
    fn overlapping_batches_are_merged_and_sorted() {
        let h = HOUR_MICROS;
        let batches = [batch(&[5, h + 1]), batch(&[3, 2 * h])];
        let spans_like = Table::Spans.schema();
        // order_by_time merges with the table's schema, so use real span batches here.
        let real: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                let spans: Vec<_> = times(b, 0)
                    .iter()
                    .map(|&t| meshlens_model::span::SpanRecord {
                        start_time: DateTime::<Utc>::from_timestamp_micros(t).unwrap(),
                        ..Default::default()
                    })
                    .collect();
                crate::schema::spans_to_batch(&spans).unwrap()
            })
            .collect();
        let index = spans_like.index_of("start_time").unwrap();
        let ordered = order_by_time(Table::Spans, &real, index).unwrap();
        assert_eq!(ordered.len(), 1);
        assert_eq!(times(&ordered[0], index), [3, 5, h + 1, 2 * h]);
        let hours: Vec<(i64, usize)> =
            split_by_hour(&ordered, index).iter().map(|(h, s)| (*h, s.iter().map(|b| b.num_rows()).sum())).collect();
        assert_eq!(hours, [(0, 2), (h, 1), (2 * h, 1)]);
    }

    #[test]
    fn parts_have_the_requested_size() {
        let parts = split_rows(vec![batch(&[1, 2, 3]), batch(&[4, 5]), batch(&[6])], 4);
        let sizes: Vec<Vec<i64>> = parts.iter().map(|p| all_times(p)).collect();
        assert_eq!(sizes, [vec![1, 2, 3, 4], vec![5, 6]]);
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
