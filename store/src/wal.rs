//! Write-ahead log: the durability point of the store.
//!
//! A WAL record is one appended batch:
//!
//! ```text
//! magic u32 LE "MLW1" | body_len u32 LE | crc32(body) u32 LE | body
//! body = seq u64 LE | table tag u8 | Arrow IPC stream of the batch
//! ```
//!
//! `seq` is a store-wide, strictly increasing sequence number; the catalog's checkpoint says which prefix
//! of it is in Parquet. The magic lets recovery find the next intact record after a damaged one, so one
//! bad record does not take the rest of the log with it.
//!
//! Segments are files `wal/<first seq, 20 digits>.wal`; the writer starts a new one when the current one
//! passes `StoreConfig::wal_segment_bytes` and on every start, so a segment never changes after the
//! writer has moved on. A segment whose records are all covered by the checkpoint is deleted.

use crate::config::WalCompression;
use crate::error::{Result, StoreError, arrow_err, io_err};
use crate::schema::Table;
use arrow::array::RecordBatch;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"MLW1";
const HEADER_LEN: usize = 12;
/// seq + table tag.
const BODY_PREFIX_LEN: usize = 9;
const SEGMENT_SUFFIX: &str = ".wal";
/// Name of the folder (under `wal/`) that receives damaged records.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Encodes a batch as an Arrow IPC stream (schema + one batch). IPC is close to a memcpy of the Arrow
/// buffers (plus the optional buffer compression), which keeps the hot path cheap, and decodes back to
/// the identical batch; the reader detects the compression by itself.
pub(crate) fn encode_payload(batch: &RecordBatch, compression: WalCompression) -> Result<Vec<u8>> {
    let options = IpcWriteOptions::default();
    let options = match compression {
        WalCompression::None => Ok(options),
        WalCompression::Lz4 => options.try_with_compression(Some(CompressionType::LZ4_FRAME)),
        WalCompression::Zstd => options
            .try_with_compression(Some(CompressionType::ZSTD))
            .and_then(|o| o.try_with_compression_level(Some(1))),
    }
    .map_err(arrow_err("configuring WAL compression"))?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2 + 4096);
    let mut writer = StreamWriter::try_new_with_options(&mut out, batch.schema_ref(), options)
        .map_err(arrow_err("encoding a WAL record"))?;
    writer.write(batch).map_err(arrow_err("encoding a WAL record"))?;
    writer.finish().map_err(arrow_err("encoding a WAL record"))?;
    drop(writer);
    Ok(out)
}

fn decode_payload(payload: &[u8]) -> std::result::Result<RecordBatch, String> {
    let mut reader = StreamReader::try_new(payload, None).map_err(|e| format!("Arrow IPC: {e}"))?;
    match reader.next() {
        Some(Ok(batch)) => Ok(batch),
        Some(Err(e)) => Err(format!("Arrow IPC: {e}")),
        None => Err("Arrow IPC stream holds no batch".into()),
    }
}

/// Largest payload one WAL record can carry (the frame's length field is 32 bits).
pub(crate) const MAX_PAYLOAD_BYTES: usize = u32::MAX as usize - BODY_PREFIX_LEN;

/// Appends one framed record to `out`. The payload must not exceed [`MAX_PAYLOAD_BYTES`].
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, table: Table, payload: &[u8]) {
    let body_len = BODY_PREFIX_LEN + payload.len();
    let mut hasher = crc32fast::Hasher::new();
    let seq_bytes = seq.to_le_bytes();
    hasher.update(&seq_bytes);
    hasher.update(&[table.wal_tag()]);
    hasher.update(payload);
    out.reserve(HEADER_LEN + body_len);
    out.extend_from_slice(&MAGIC);
    // Appends check MAX_PAYLOAD_BYTES before queuing, so the cast cannot truncate.
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.push(table.wal_tag());
    out.extend_from_slice(payload);
}

/// An intact frame: its sequence number, table tag, payload and total length in bytes.
struct Frame<'a> {
    seq: u64,
    tag: u8,
    payload: &'a [u8],
    len: usize,
}

/// Parses the frame at the start of `data`; `None` when it is incomplete or fails its checksum.
fn parse_frame(data: &[u8]) -> Option<Frame<'_>> {
    if data.len() < HEADER_LEN || data[..4] != MAGIC {
        return None;
    }
    let body_len = u32::from_le_bytes(data[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(data[8..12].try_into().ok()?);
    if body_len < BODY_PREFIX_LEN || data.len() - HEADER_LEN < body_len {
        return None;
    }
    let body = &data[HEADER_LEN..HEADER_LEN + body_len];
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some(Frame {
        seq: u64::from_le_bytes(body[..8].try_into().ok()?),
        tag: body[8],
        payload: &body[BODY_PREFIX_LEN..],
        len: HEADER_LEN + body_len,
    })
}

/// Offset of the next intact frame at or after `from`.
fn find_next_frame(data: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while pos + HEADER_LEN <= data.len() {
        let offset = data[pos..].windows(4).position(|w| w == MAGIC)?;
        pos += offset;
        if parse_frame(&data[pos..]).is_some() {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// WAL segments in `dir`, sorted by first sequence number.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing WAL directory", dir))? {
        let entry = entry.map_err(io_err("listing WAL directory", dir))?;
        let name = entry.file_name();
        let Some(first) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)).and_then(|n| n.parse().ok())
        else {
            continue;
        };
        segments.push((first, entry.path()));
    }
    segments.sort();
    Ok(segments)
}

/// Deletes every segment whose records all have `seq <= through`. Segment `i` ends just before segment
/// `i + 1` starts, so only segments with a successor can be proven covered; the newest is kept even when
/// covered and goes at a later flush.
pub(crate) fn delete_segments_through(dir: &Path, through: u64) -> Result<usize> {
    let segments = list_segments(dir)?;
    let mut deleted = 0;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = pair[1];
        if next_first > through.saturating_add(1) {
            break;
        }
        match fs::remove_file(path) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("deleting WAL segment", path)(e)),
        }
    }
    if deleted > 0 {
        sync_dir(dir)?;
        tracing::debug!(deleted, through, "deleted WAL segments covered by the checkpoint");
    }
    Ok(deleted)
}

/// fsyncs a directory so that file creations, renames and deletions in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
}

/// The segment file the writer thread appends to.
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    max_bytes: u64,
    current: Option<(File, PathBuf, u64)>,
}

impl SegmentWriter {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        SegmentWriter { dir, max_bytes, current: None }
    }

    /// Writes a group of frames whose first record is `first_seq` and makes it durable (fdatasync).
    pub(crate) fn write_group(&mut self, first_seq: u64, frames: &[u8]) -> Result<()> {
        if self.current.as_ref().is_none_or(|(_, _, size)| *size >= self.max_bytes) {
            let path = self.dir.join(segment_name(first_seq));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err("creating WAL segment", &path))?;
            // The new directory entry must be durable before any record in it is acknowledged.
            sync_dir(&self.dir)?;
            tracing::debug!(path = %path.display(), "started WAL segment");
            self.current = Some((file, path, 0));
        }
        let Some((file, path, size)) = self.current.as_mut() else { unreachable!("a segment was opened above") };
        let result = file
            .write_all(frames)
            .map_err(io_err("writing WAL segment", path))
            .and_then(|()| file.sync_data().map_err(io_err("syncing WAL segment", path)));
        match result {
            Ok(()) => {
                *size += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                // The segment may now end in a partial record; later groups go to a fresh segment so
                // that this damage stays at a segment's end, where recovery expects it.
                self.current = None;
                Err(e)
            }
        }
    }
}

/// A torn record at the end of the newest segment, cut off during recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Offset where the segment was cut.
    pub offset: u64,
    pub bytes: u64,
}

/// A damaged region of a segment, moved aside during recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    /// Where the bytes were saved; `None` when the store was opened read-only and only skipped them.
    pub file: Option<PathBuf>,
    pub reason: String,
}

/// What recovery found in the WAL and the Parquet folder. `Store::recovery_report` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// WAL segments read.
    pub segments: usize,
    /// Records (appended batches) replayed into memory: those after the catalog checkpoint.
    pub records_replayed: u64,
    /// Rows in those records.
    pub rows_replayed: u64,
    /// Records skipped because the catalog says they are already in Parquet.
    pub records_already_persisted: u64,
    pub torn_tails: Vec<TornTail>,
    pub quarantined: Vec<Quarantined>,
    /// Parquet files on disk that no catalog row references (a flush that crashed before its commit);
    /// their rows are replayed from the WAL, so the files were deleted.
    pub orphan_files_removed: Vec<PathBuf>,
}

impl RecoveryReport {
    /// True when nothing was truncated, quarantined or cleaned up.
    pub fn is_clean(&self) -> bool {
        self.torn_tails.is_empty() && self.quarantined.is_empty() && self.orphan_files_removed.is_empty()
    }
}

/// One replayed record.
pub(crate) struct Replayed {
    pub seq: u64,
    pub table: Table,
    pub batch: RecordBatch,
}

/// Whether recovery may change the WAL (truncate, quarantine, rewrite) or only read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayMode {
    Repair,
    ReadOnly,
}

/// Reads every segment and returns the intact records with `seq > after`, in sequence order.
///
/// Damage is handled without failing the open: bytes after the last intact record of the newest segment
/// are a torn write (the writer died mid-record; that record was never acknowledged) and are truncated;
/// any other damaged region is copied to `wal/quarantine/` and cut out of its segment.
pub(crate) fn replay(dir: &Path, after: u64, mode: ReplayMode) -> Result<(Vec<Replayed>, RecoveryReport)> {
    let segments = list_segments(dir)?;
    let mut report = RecoveryReport { segments: segments.len(), ..Default::default() };
    let mut records = Vec::new();
    let mut last_seq = after;
    for (index, (_, path)) in segments.iter().enumerate() {
        let is_newest = index + 1 == segments.len();
        let data = fs::read(path).map_err(io_err("reading WAL segment", path))?;
        let mut keep: Vec<std::ops::Range<usize>> = Vec::new();
        let mut bad: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let Some(frame) = parse_frame(&data[pos..]) else {
                let next = find_next_frame(&data, pos + 1);
                let end = next.unwrap_or(data.len());
                if next.is_none() && is_newest {
                    if mode == ReplayMode::Repair {
                        tracing::warn!(segment = %path.display(), offset = pos, bytes = end - pos,
                            "WAL ends in a torn record (crash during a write); truncating it");
                    }
                    report.torn_tails.push(TornTail {
                        segment: path.clone(),
                        offset: pos as u64,
                        bytes: (end - pos) as u64,
                    });
                } else {
                    bad.push((pos..end, "checksum or framing error".into()));
                }
                pos = end;
                continue;
            };
            let range = pos..pos + frame.len;
            pos += frame.len;
            if frame.seq <= last_seq {
                if frame.seq <= after {
                    report.records_already_persisted += 1;
                } else {
                    tracing::warn!(segment = %path.display(), seq = frame.seq, "WAL record repeats a sequence number; skipped");
                }
                keep.push(range);
                continue;
            }
            let decoded = Table::from_wal_tag(frame.tag)
                .ok_or_else(|| format!("unknown table tag {}", frame.tag))
                .and_then(|table| decode_payload(frame.payload).map(|batch| (table, batch)))
                .and_then(|(table, batch)| {
                    crate::schema::check_batch(table, &batch).map_err(|e| e.to_string())?;
                    Ok((table, batch))
                });
            match decoded {
                Ok((table, batch)) => {
                    report.records_replayed += 1;
                    report.rows_replayed += batch.num_rows() as u64;
                    last_seq = frame.seq;
                    records.push(Replayed { seq: frame.seq, table, batch });
                    keep.push(range);
                }
                Err(reason) => bad.push((range, reason)),
            }
        }
        let torn_here = report.torn_tails.last().is_some_and(|t| &t.segment == path);
        for (range, reason) in &bad {
            let file = if mode == ReplayMode::Repair { Some(quarantine(dir, path, range, &data)?) } else { None };
            tracing::warn!(segment = %path.display(), offset = range.start, bytes = range.len(), %reason,
                quarantine = ?file, "damaged WAL record moved aside");
            report.quarantined.push(Quarantined {
                segment: path.clone(),
                offset: range.start as u64,
                bytes: range.len() as u64,
                file,
                reason: reason.clone(),
            });
        }
        if mode == ReplayMode::Repair {
            if keep.is_empty() {
                // Nothing intact: remove the file, also so that the writer can create a segment of
                // the same name (it names segments by the next sequence number).
                fs::remove_file(path).map_err(io_err("deleting empty WAL segment", path))?;
                sync_dir(dir)?;
            } else if torn_here || !bad.is_empty() {
                rewrite_segment(path, &data, &keep)?;
            }
        }
    }
    Ok((records, report))
}

fn quarantine(dir: &Path, segment: &Path, range: &std::ops::Range<usize>, data: &[u8]) -> Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir).map_err(io_err("creating quarantine directory", &qdir))?;
    let stem = segment.file_stem().and_then(|s| s.to_str()).unwrap_or("segment");
    let file = qdir.join(format!("{stem}-{:012}.bad", range.start));
    let mut out = File::create(&file).map_err(io_err("creating quarantine file", &file))?;
    out.write_all(&data[range.clone()]).map_err(io_err("writing quarantine file", &file))?;
    out.sync_all().map_err(io_err("syncing quarantine file", &file))?;
    sync_dir(&qdir)?;
    Ok(file)
}

/// Replaces a segment by its intact records (temp file, fsync, rename), so the damage is reported once.
fn rewrite_segment(path: &Path, data: &[u8], keep: &[std::ops::Range<usize>]) -> Result<()> {
    let tmp = path.with_extension("wal.tmp");
    let mut out = File::create(&tmp).map_err(io_err("creating WAL rewrite", &tmp))?;
    for range in keep {
        out.write_all(&data[range.clone()]).map_err(io_err("writing WAL rewrite", &tmp))?;
    }
    out.sync_all().map_err(io_err("syncing WAL rewrite", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("replacing WAL segment", path))?;
    let dir =
        path.parent().ok_or_else(|| StoreError::Config(format!("WAL segment {} has no parent", path.display())))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};

    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, seq, Table::Requests, payload);
        out
    }

    #[test]
    fn frames_round_trip_and_detect_corruption() {
        let data = frame(7, b"hello");
        let parsed = parse_frame(&data).unwrap();
        assert_eq!((parsed.seq, parsed.tag, parsed.payload, parsed.len), (7, 1, &b"hello"[..], data.len()));
        for i in 0..data.len() {
            let mut broken = data.clone();
            broken[i] ^= 0x40;
            assert!(parse_frame(&broken).is_none(), "flip at byte {i} went unnoticed");
        }
        assert!(parse_frame(&data[..data.len() - 1]).is_none());
    }

    #[test]
    fn resync_finds_the_next_intact_frame() {
        let mut data = frame(1, b"one");
        let second = data.len();
        data.extend(frame(2, b"two"));
        data[second + 14] ^= 1;
        let third = data.len();
        data.extend(frame(3, b"three"));
        assert_eq!(find_next_frame(&data, second + 1), Some(third));
    }

    #[test]
    fn payload_round_trips() {
        let batch =
            RecordBatch::try_from_iter([("x", std::sync::Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
        for compression in [WalCompression::None, WalCompression::Lz4, WalCompression::Zstd] {
            assert_eq!(decode_payload(&encode_payload(&batch, compression).unwrap()).unwrap(), batch);
        }
    }
}
