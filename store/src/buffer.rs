//! Acknowledged rows that are not in Parquet yet.
//!
//! Rows arrive here from the WAL writer, in sequence order, right after their WAL record is durable. A
//! flush moves the whole buffer into a "persisting" slot (still visible to queries) and writes it out;
//! when the catalog commit succeeds the slot is dropped, when anything fails it goes back to the front of
//! the buffer. Queries therefore see every acknowledged row exactly once: in Parquet or here, never both
//! (the swap happens under the store's commit lock, see `Shared::flush`).

use crate::schema::Table;
use arrow::array::RecordBatch;
use std::time::Instant;

/// The rows one flush writes out: everything up to and including `max_seq`.
pub(crate) struct FlushSnapshot {
    pub batches: [Vec<RecordBatch>; 2],
    pub max_seq: u64,
    pub rows: usize,
    /// Their [`footprint`]: what the flush releases from the memory budget.
    pub bytes: usize,
}

/// What a batch counts against the store's memory budget: the size of its Arrow buffers.
pub(crate) fn footprint(batch: &RecordBatch) -> usize {
    batch.get_array_memory_size()
}

#[derive(Default)]
pub(crate) struct Buffer {
    active: [Vec<RecordBatch>; 2],
    active_rows: usize,
    active_bytes: usize,
    /// When the oldest active row arrived; drives the age-based flush.
    active_since: Option<Instant>,
    persisting: Option<FlushSnapshot>,
    /// Highest sequence number inserted so far.
    last_seq: u64,
}

impl Buffer {
    pub(crate) fn insert(&mut self, table: Table, seq: u64, batch: RecordBatch) {
        debug_assert!(seq > self.last_seq, "WAL records reach the buffer in sequence order");
        self.last_seq = seq;
        self.active_rows += batch.num_rows();
        self.active_bytes += footprint(&batch);
        self.active_since.get_or_insert_with(Instant::now);
        self.active[table.index()].push(batch);
    }

    /// Rows waiting for the next flush (not counting a flush in progress).
    pub(crate) fn active_rows(&self) -> usize {
        self.active_rows
    }

    /// [`footprint`] of the rows waiting for the next flush.
    pub(crate) fn active_bytes(&self) -> usize {
        self.active_bytes
    }

    /// Age of the oldest row waiting for the next flush.
    pub(crate) fn active_age(&self) -> Option<std::time::Duration> {
        self.active_since.map(|t| t.elapsed())
    }

    /// Rows in memory, including a flush in progress.
    pub(crate) fn total_rows(&self) -> usize {
        self.active_rows + self.persisting.as_ref().map_or(0, |p| p.rows)
    }

    /// Starts a flush: moves the active rows to the persisting slot and returns a copy of them (the
    /// batches are reference-counted, so the copy is cheap). `None` when there is nothing to flush or a
    /// flush is already in progress.
    pub(crate) fn begin_flush(&mut self) -> Option<FlushSnapshot> {
        if self.active_rows == 0 || self.persisting.is_some() {
            return None;
        }
        let snapshot = FlushSnapshot {
            batches: std::mem::take(&mut self.active),
            max_seq: self.last_seq,
            rows: std::mem::take(&mut self.active_rows),
            bytes: std::mem::take(&mut self.active_bytes),
        };
        self.active_since = None;
        let copy = FlushSnapshot {
            batches: snapshot.batches.clone(),
            max_seq: snapshot.max_seq,
            rows: snapshot.rows,
            bytes: snapshot.bytes,
        };
        self.persisting = Some(snapshot);
        Some(copy)
    }

    /// The flush committed: its rows are now served from Parquet.
    pub(crate) fn finish_flush(&mut self) {
        self.persisting = None;
    }

    /// The flush failed: put its rows back in front of newer ones so the next flush retries them.
    pub(crate) fn abort_flush(&mut self) {
        if let Some(p) = self.persisting.take() {
            for (slot, mut batches) in self.active.iter_mut().zip(p.batches) {
                batches.append(slot);
                *slot = batches;
            }
            self.active_rows += p.rows;
            self.active_bytes += p.bytes;
            self.active_since = Some(Instant::now());
        }
    }

    /// Every in-memory batch of `table` (persisting first, then active).
    pub(crate) fn snapshot(&self, table: Table) -> Vec<RecordBatch> {
        let persisting = self.persisting.iter().flat_map(|p| p.batches[table.index()].iter());
        persisting.chain(self.active[table.index()].iter()).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from_iter_values(0..n)) as _)]).unwrap()
    }

    #[test]
    fn flush_lifecycle_keeps_rows_visible_exactly_once() {
        let mut buffer = Buffer::default();
        buffer.insert(Table::Requests, 1, batch(3));
        buffer.insert(Table::Spans, 2, batch(2));
        let snap = buffer.begin_flush().unwrap();
        assert_eq!((snap.max_seq, snap.rows), (2, 5));
        assert!(buffer.begin_flush().is_none(), "one flush at a time");
        buffer.insert(Table::Requests, 3, batch(4));
        assert_eq!(buffer.snapshot(Table::Requests).iter().map(|b| b.num_rows()).sum::<usize>(), 7);
        assert_eq!(buffer.total_rows(), 9);
        buffer.abort_flush();
        assert_eq!(buffer.active_rows(), 9);
        assert_eq!(buffer.active_bytes(), [3, 2, 4].map(|n| footprint(&batch(n))).iter().sum::<usize>());
        let rows: Vec<usize> = buffer.snapshot(Table::Requests).iter().map(|b| b.num_rows()).collect();
        assert_eq!(rows, [3, 4], "aborted rows go back in front, in order");
        let snap = buffer.begin_flush().unwrap();
        assert_eq!(snap.max_seq, 3);
        buffer.finish_flush();
        assert_eq!(buffer.total_rows(), 0);
        assert!(buffer.snapshot(Table::Spans).is_empty());
    }
}
