//! The `Store`: wiring of WAL writer, buffer, flusher, catalog and query engine.
//!
//! Threads and tasks:
//! - appenders (any task) build the Arrow batch and its WAL payload, reserve memory budget, and hand both
//!   to the WAL writer, then wait on a oneshot;
//! - the WAL writer (one OS thread, blocking I/O) takes every append that is waiting, writes them as one
//!   group, fsyncs once, inserts the batches into the buffer and answers each appender: group commit;
//! - the flusher (one tokio task) writes the buffer to Parquet when it is big or old enough and publishes
//!   the files in the catalog together with the new WAL checkpoint.

use crate::buffer::{Buffer, footprint};
use crate::catalog::{Catalog, FileEntry};
use crate::config::{CatalogLocation, StoreConfig};
use crate::error::{Result, StoreError, io_err};
use crate::flush;
use crate::query::{StoreTable, read_only_sql_options};
use crate::retention::{self, RetentionReport};
use crate::schema::{self, Table};
use crate::wal::{self, RecoveryReport, ReplayMode, SegmentWriter};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use meshlens_model::record::RequestRecord;
use meshlens_model::span::SpanRecord;
use serde::Serialize;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot, watch};

const WAL_DIR: &str = "wal";
const LOCK_FILE: &str = "LOCK";
/// Upper bound of one WAL group, so that a flood of appends still gets acknowledged in bounded steps.
const MAX_GROUP_BYTES: usize = 64 << 20;
/// How often a read-only open retries when a concurrent writer moved the checkpoint while it read the WAL.
const READ_ONLY_ATTEMPTS: usize = 5;

/// Counters since the store was opened (plus the current buffer fill).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// fsyncs of the WAL; fewer than `wal_records` when group commit merged concurrent appends.
    pub wal_syncs: u64,
    /// WAL records written (one per append call).
    pub wal_records: u64,
    pub wal_bytes: u64,
    pub flushes: u64,
    pub rows_flushed: u64,
    pub parquet_files_written: u64,
    /// Parquet files handed to scans after catalog pruning, summed over all planned scans.
    pub parquet_files_scanned: u64,
    /// Rows in memory now (buffered or being flushed).
    pub buffered_rows: usize,
    /// Bytes counted against `memory_budget_bytes` now (rows buffered, being flushed or waiting for the WAL).
    pub reserved_bytes: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    wal_syncs: AtomicU64,
    wal_records: AtomicU64,
    wal_bytes: AtomicU64,
    flushes: AtomicU64,
    rows_flushed: AtomicU64,
    files_written: AtomicU64,
    pub(crate) parquet_files_scanned: AtomicU64,
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    pub rows: usize,
    pub files: usize,
    /// WAL checkpoint after the flush (unchanged when there was nothing to flush).
    pub wal_seq: u64,
}

/// Result of [`Store::sql`]: the schema (also for empty results) and the batches.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// State shared by the store handle, the WAL writer thread, the flusher task and the table providers.
pub(crate) struct Shared {
    config: StoreConfig,
    pub(crate) data_dir: PathBuf,
    wal_dir: PathBuf,
    pub(crate) catalog: Catalog,
    buffer: Mutex<Buffer>,
    /// Held for writing while a flush publishes files and drops the same rows from memory, and while
    /// retention drops partitions; held for reading while a scan lists files and copies memory. So a scan
    /// sees every row once: in a listed file or in memory.
    pub(crate) commit_lock: tokio::sync::RwLock<()>,
    /// One flush at a time.
    flush_lock: tokio::sync::Mutex<()>,
    flush_wanted: Notify,
    /// Bytes counted against `memory_budget_bytes` (see [`footprint`]).
    reserved_bytes: AtomicUsize,
    /// Woken whenever reserved bytes are released, for appends waiting for room.
    room_freed: Notify,
    /// An append is waiting for room: the next flush is due whatever the buffer's size or age.
    room_wanted: AtomicBool,
    pub(crate) stats: Counters,
    /// Read-only stores answer from the snapshot taken at open: files of later flushes are ignored (their
    /// rows are already in memory from the WAL replay, or arrived after the snapshot).
    snapshot_seq: Option<u64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("data_dir", &self.data_dir).field("catalog", &self.catalog.backend()).finish()
    }
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        // The buffer's methods leave it consistent at every panic point, so a poisoned lock is usable.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `bytes` of the memory budget, waiting up to `busy_wait` for a flush to make room.
    async fn reserve(&self, bytes: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.busy_wait;
        loop {
            let freed = self.room_freed.notified();
            tokio::pin!(freed);
            // Registered before the attempt, so a release between the attempt and the wait is not missed.
            freed.as_mut().enable();
            let busy = match self.try_reserve(bytes) {
                Ok(()) => return Ok(()),
                Err(busy) => busy,
            };
            self.room_wanted.store(true, Ordering::Release);
            self.flush_wanted.notify_one();
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(busy);
            }
        }
    }

    fn try_reserve(&self, bytes: usize) -> Result<()> {
        let budget = self.config.memory_budget_bytes;
        let mut current = self.reserved_bytes.load(Ordering::Relaxed);
        loop {
            // An empty store takes any single batch, so one oversized append cannot be refused forever.
            if current > 0 && current + bytes > budget {
                return Err(StoreError::Busy { requested: bytes, in_use: current, budget });
            }
            match self.reserved_bytes.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.reserved_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.room_freed.notify_waiters();
    }

    /// Whether the active rows should be flushed now for their number or size. Half the memory budget
    /// triggers a flush so that appends keep finding room while it runs.
    fn flush_wanted_for_size(&self, buffer: &Buffer) -> bool {
        buffer.active_rows() >= self.config.flush_rows || buffer.active_bytes() >= self.config.memory_budget_bytes / 2
    }

    /// Files overlapping `[from, to]` and a copy of the in-memory rows, taken consistently.
    pub(crate) async fn scan_snapshot(
        &self,
        table: Table,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<(Vec<FileEntry>, Vec<RecordBatch>)> {
        let _commit = self.commit_lock.read().await;
        let files = self.catalog.files(table, from, to, self.snapshot_seq).await?;
        let memory = self.buffer().snapshot(table);
        Ok((files, memory))
    }

    fn flush_due(&self) -> bool {
        let buffer = self.buffer();
        self.flush_wanted_for_size(&buffer)
            || (self.room_wanted.load(Ordering::Acquire) && buffer.active_rows() > 0)
            || buffer.active_age().is_some_and(|age| age >= self.config.flush_interval)
    }

    /// Writes everything buffered to Parquet and publishes it. See the module docs of `flush` and
    /// `buffer` for the visibility rules.
    pub(crate) async fn flush(self: &Arc<Self>) -> Result<FlushReport> {
        let _one_at_a_time = self.flush_lock.lock().await;
        let Some(snapshot) = self.buffer().begin_flush() else {
            return Ok(FlushReport::default());
        };
        self.room_wanted.store(false, Ordering::Release);
        let started = Instant::now();
        let seq = snapshot.max_seq;
        let writer = Arc::clone(self);
        let batches = snapshot.batches;
        let written = tokio::task::spawn_blocking(move || {
            let mut files = Vec::new();
            for table in Table::ALL {
                match flush::write_table(
                    &writer.data_dir,
                    table,
                    &batches[table.index()],
                    seq,
                    writer.config.row_group_rows,
                ) {
                    Ok(more) => files.extend(more),
                    Err(e) => {
                        flush::remove_files(&writer.data_dir, &files);
                        return Err(e);
                    }
                }
            }
            Ok(files)
        })
        .await
        .map_err(|e| StoreError::Task { task: "parquet writer", detail: e.to_string() })
        .and_then(|r| r);
        let files = match written {
            Ok(files) => files,
            Err(e) => {
                self.buffer().abort_flush();
                return Err(e);
            }
        };
        {
            let _commit = self.commit_lock.write().await;
            if let Err(e) = self.catalog.commit_flush(&files, seq).await {
                // A lost reply can hide a successful commit; the checkpoint tells which it was. Undoing a
                // commit that happened would re-flush the rows and duplicate them.
                let committed = matches!(self.catalog.checkpoint().await, Ok(cp) if cp >= seq);
                if !committed {
                    self.buffer().abort_flush();
                    flush::remove_files(&self.data_dir, &files);
                    return Err(e);
                }
                tracing::warn!(error = %e, "flush commit reported an error but the checkpoint moved; keeping it");
            }
            self.buffer().finish_flush();
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.rows_flushed.fetch_add(snapshot.rows as u64, Ordering::Relaxed);
        self.stats.files_written.fetch_add(files.len() as u64, Ordering::Relaxed);
        self.release(snapshot.bytes);
        // Deleting covered segments only frees disk: replay skips records at or below the checkpoint anyway.
        let wal_dir = self.wal_dir.clone();
        match tokio::task::spawn_blocking(move || wal::delete_segments_through(&wal_dir, seq)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not delete flushed WAL segments"),
            Err(e) => tracing::warn!(error = %e, "WAL cleanup task failed"),
        }
        tracing::info!(rows = snapshot.rows, files = files.len(), wal_seq = seq, elapsed = ?started.elapsed(), "flushed to Parquet");
        Ok(FlushReport { rows: snapshot.rows, files: files.len(), wal_seq: seq })
    }
}

/// What the WAL writer thread is asked to do.
enum WalCommand {
    Append(AppendRequest),
    /// Write what was queued before, then stop; later appends fail with [`StoreError::Closed`].
    Stop,
}

/// One append waiting for the WAL writer.
struct AppendRequest {
    table: Table,
    batch: RecordBatch,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<()>>,
}

/// The durable telemetry store. See the crate docs for the design.
///
/// Appends, queries and [`Store::close`] take `&self`; share a store between tasks with `Arc<Store>`.
/// Dropping the store stops its background work without flushing, which is safe (everything
/// acknowledged is in the WAL); `close` flushes first, so the next open has nothing to replay, and it
/// works while other tasks still hold the `Arc` (they get [`StoreError::Closed`] from then on).
pub struct Store {
    shared: Arc<Shared>,
    ctx: SessionContext,
    /// The WAL writer's queue; `None` for read-only stores.
    wal_tx: Option<mpsc::UnboundedSender<WalCommand>>,
    /// The background work of a read-write store, taken by the first `close` (or by drop).
    workers: std::sync::Mutex<Option<Workers>>,
    recovery: RecoveryReport,
    /// The data directory's lock (read-write stores only), held until `close` or drop.
    lock: std::sync::Mutex<Option<File>>,
}

/// The WAL writer thread and the flusher task of a read-write store.
struct Workers {
    writer: std::thread::JoinHandle<()>,
    flusher: tokio::task::JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("shared", &self.shared).field("read_only", &self.wal_tx.is_none()).finish()
    }
}

async fn connect_catalog(config: &StoreConfig, data_dir: &Path, read_only: bool) -> Result<Catalog> {
    match CatalogLocation::from_config(config, data_dir)? {
        CatalogLocation::Sqlite(path) => {
            if read_only && !path.exists() {
                return Err(StoreError::Config(format!(
                    "no store catalog at {} (has a store been written in {}?)",
                    path.display(),
                    data_dir.display()
                )));
            }
            Catalog::open_sqlite(&path, read_only).await
        }
        CatalogLocation::Postgres(url) => Catalog::connect_postgres(&url).await,
    }
}

fn blocking_failed(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> StoreError {
    move |e| StoreError::Task { task, detail: e.to_string() }
}

impl Store {
    /// Opens (creating if needed) the store for reading and writing: applies catalog migrations, replays
    /// the WAL after the checkpoint (repairing torn or corrupt records, see [`Store::recovery_report`]),
    /// deletes orphaned Parquet files, and starts the WAL writer and the flusher. Must run inside a tokio
    /// runtime. Fails with [`StoreError::Locked`] when another process has the data directory open.
    pub async fn open(config: StoreConfig) -> Result<Store> {
        config.validate()?;
        fs::create_dir_all(&config.data_dir).map_err(io_err("creating data directory", &config.data_dir))?;
        let data_dir =
            fs::canonicalize(&config.data_dir).map_err(io_err("resolving data directory", &config.data_dir))?;
        let wal_dir = data_dir.join(WAL_DIR);
        fs::create_dir_all(&wal_dir).map_err(io_err("creating WAL directory", &wal_dir))?;
        let lock = lock_data_dir(&data_dir)?;

        let catalog = connect_catalog(&config, &data_dir, false).await?;
        catalog.migrate().await?;
        let checkpoint = catalog.checkpoint().await?;
        let replay_dir = wal_dir.clone();
        let (records, mut report) =
            tokio::task::spawn_blocking(move || wal::replay(&replay_dir, checkpoint, ReplayMode::Repair))
                .await
                .map_err(blocking_failed("WAL replay"))??;

        let known = catalog.all_paths().await?.into_iter().collect();
        let orphan_dir = data_dir.clone();
        let orphans = tokio::task::spawn_blocking(move || flush::find_orphans(&orphan_dir, &known))
            .await
            .map_err(blocking_failed("orphan scan"))??;
        for path in orphans {
            tracing::warn!(path = %path.display(), "deleting a Parquet file no catalog row lists (interrupted flush)");
            fs::remove_file(&path).map_err(io_err("deleting orphaned Parquet file", &path))?;
            report.orphan_files_removed.push(path);
        }
        wal::delete_segments_through(&wal_dir, checkpoint)?;

        let shared = Arc::new(Shared {
            config: StoreConfig { data_dir: data_dir.clone(), ..config },
            data_dir,
            wal_dir: wal_dir.clone(),
            catalog,
            buffer: Mutex::new(Buffer::default()),
            commit_lock: tokio::sync::RwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_wanted: Notify::new(),
            reserved_bytes: AtomicUsize::new(records.iter().map(|r| footprint(&r.batch)).sum()),
            room_freed: Notify::new(),
            room_wanted: AtomicBool::new(false),
            stats: Counters::default(),
            snapshot_seq: None,
        });
        let mut next_seq = checkpoint + 1;
        {
            let mut buffer = shared.buffer();
            for r in records {
                next_seq = r.seq + 1;
                buffer.insert(r.table, r.seq, r.batch);
            }
        }

        let (wal_tx, wal_rx) = mpsc::unbounded_channel();
        let segment = SegmentWriter::new(wal_dir.clone(), shared.config.wal_segment_bytes);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("meshlens-wal".into())
            .spawn(move || wal_writer(writer_shared, wal_rx, segment, next_seq))
            .map_err(io_err("starting the WAL writer thread for", &wal_dir))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let flusher = tokio::spawn(flusher(Arc::clone(&shared), shutdown_rx));
        if report.rows_replayed > 0 {
            shared.flush_wanted.notify_one();
        }
        if !report.is_clean() {
            tracing::warn!(?report, "store recovered with repairs");
        }
        tracing::info!(data_dir = %shared.data_dir.display(), catalog = shared.catalog.backend(), checkpoint,
            replayed_rows = report.rows_replayed, "store open");
        Ok(Store {
            ctx: session_for(&shared),
            shared,
            wal_tx: Some(wal_tx),
            workers: std::sync::Mutex::new(Some(Workers { writer, flusher, shutdown: shutdown_tx })),
            recovery: report,
            lock: std::sync::Mutex::new(Some(lock)),
        })
    }

    /// Opens an existing store for queries only, without taking the data directory's lock, so it works
    /// next to a running writer (e.g. `meshlens query` against a live collector). It answers from a
    /// snapshot taken at open: the catalog at its current checkpoint plus the WAL after it. Nothing on
    /// disk is changed; damaged WAL records are skipped and reported.
    pub async fn open_read_only(config: StoreConfig) -> Result<Store> {
        let data_dir =
            fs::canonicalize(&config.data_dir).map_err(io_err("opening data directory", &config.data_dir))?;
        let wal_dir = data_dir.join(WAL_DIR);
        let catalog = connect_catalog(&config, &data_dir, true).await?;
        let mut attempt = 0;
        let (checkpoint, records, report) = loop {
            attempt += 1;
            let checkpoint = catalog.checkpoint().await?;
            let replay_dir = wal_dir.clone();
            let replayed = tokio::task::spawn_blocking(move || {
                if replay_dir.exists() {
                    wal::replay(&replay_dir, checkpoint, ReplayMode::ReadOnly)
                } else {
                    Ok((Vec::new(), RecoveryReport::default()))
                }
            })
            .await
            .map_err(blocking_failed("WAL replay"))?;
            // A writer that flushed meanwhile may have deleted segments we were about to read.
            let moved = catalog.checkpoint().await? != checkpoint;
            match replayed {
                Ok((records, report)) if !moved => break (checkpoint, records, report),
                Err(e) if attempt >= READ_ONLY_ATTEMPTS => return Err(e),
                Ok(_) if attempt >= READ_ONLY_ATTEMPTS => {
                    return Err(StoreError::Config(format!(
                        "the store in {} kept flushing while it was being read; try again",
                        data_dir.display()
                    )));
                }
                _ => tracing::debug!(attempt, "checkpoint moved during read-only open; retrying"),
            }
        };
        let shared = Arc::new(Shared {
            config: StoreConfig { data_dir: data_dir.clone(), ..config },
            data_dir,
            wal_dir,
            catalog,
            buffer: Mutex::new(Buffer::default()),
            commit_lock: tokio::sync::RwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_wanted: Notify::new(),
            reserved_bytes: AtomicUsize::new(0),
            room_freed: Notify::new(),
            room_wanted: AtomicBool::new(false),
            stats: Counters::default(),
            snapshot_seq: Some(checkpoint),
        });
        {
            let mut buffer = shared.buffer();
            for r in records {
                buffer.insert(r.table, r.seq, r.batch);
            }
        }
        Ok(Store {
            ctx: session_for(&shared),
            shared,
            wal_tx: None,
            workers: std::sync::Mutex::new(None),
            recovery: report,
            lock: std::sync::Mutex::new(None),
        })
    }

    /// Appends request records. Returns once they are durable in the WAL (fsynced) and visible to queries.
    /// When the memory budget is used up, waits up to `StoreConfig::busy_wait` for a flush to make room,
    /// then fails with [`StoreError::Busy`].
    pub async fn append_requests(&self, records: Vec<RequestRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = schema::requests_to_batch(&records)?;
        drop(records);
        self.append_batch_of(Table::Requests, batch).await
    }

    /// Appends span records; same guarantees as [`Store::append_requests`].
    pub async fn append_spans(&self, records: Vec<SpanRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = schema::spans_to_batch(&records)?;
        drop(records);
        self.append_batch_of(Table::Spans, batch).await
    }

    /// Appends a batch that already has the table's schema ([`Table::schema`]), e.g. one a receiver built
    /// with [`crate::schema::requests_to_batch`]; same guarantees as [`Store::append_requests`].
    pub async fn append_batch(&self, table: Table, batch: RecordBatch) -> Result<()> {
        schema::check_batch(table, &batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // The stored schema is the table's, not the caller's (field metadata may differ).
        let batch = RecordBatch::try_new(table.schema(), batch.columns().to_vec())
            .map_err(crate::error::arrow_err(format!("re-labelling a {table} batch")))?;
        self.append_batch_of(table, batch).await
    }

    /// Reserves the batch's [`footprint`] and hands it to the WAL writer. From the reservation on exactly
    /// one party releases it: this function on failure before the hand-off, the writer on a failed write,
    /// the flusher after the rows are in Parquet.
    async fn append_batch_of(&self, table: Table, batch: RecordBatch) -> Result<()> {
        let Some(tx) = &self.wal_tx else { return Err(StoreError::ReadOnly) };
        let rows = batch.num_rows();
        let bytes = footprint(&batch);
        self.shared.reserve(bytes).await?;
        let payload = match wal::encode_payload(&batch, self.shared.config.wal_compression) {
            Ok(payload) => payload,
            Err(e) => {
                self.shared.release(bytes);
                return Err(e);
            }
        };
        if payload.len() > wal::MAX_PAYLOAD_BYTES {
            self.shared.release(bytes);
            return Err(StoreError::WalWrite(format!(
                "a batch of {rows} rows encodes to {} bytes, more than one WAL record holds; append it in parts",
                payload.len()
            )));
        }
        let (reply, ack) = oneshot::channel();
        if tx.send(WalCommand::Append(AppendRequest { table, batch, payload, reply })).is_err() {
            self.shared.release(bytes);
            return Err(StoreError::Closed);
        }
        ack.await.map_err(|_| StoreError::Closed)?
    }

    /// Flushes everything buffered to Parquet now (normally the flusher does this by size and age).
    pub async fn flush(&self) -> Result<FlushReport> {
        if self.wal_tx.is_none() {
            return Err(StoreError::ReadOnly);
        }
        self.shared.flush().await
    }

    /// Runs one read-only SQL query (`SELECT`, `WITH`, `EXPLAIN`) over `requests` and `spans` and collects
    /// the result. DDL, DML (including `COPY`) and statements such as `SET` are rejected.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput> {
        let frame = self.ctx.sql_with_options(sql, read_only_sql_options()).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(QueryOutput { schema, batches })
    }

    /// A DataFusion session with `requests` and `spans` registered, for callers that build plans with
    /// the DataFrame API. Unlike [`Store::sql`] it does not restrict statements; apply
    /// [`read_only_sql_options`] when running SQL that comes from users.
    pub fn session_context(&self) -> SessionContext {
        SessionContext::new_with_state(self.ctx.state())
    }

    /// Drops every hour partition that ended more than `max_age` ago: catalog rows first, then files.
    /// Rows still in memory are not affected (they are dropped after they are flushed).
    pub async fn apply_retention(&self, max_age: Duration) -> Result<RetentionReport> {
        if self.wal_tx.is_none() {
            return Err(StoreError::ReadOnly);
        }
        retention::apply(&self.shared, max_age).await
    }

    /// What the open found and repaired in the WAL (torn tail, quarantined records, orphan files).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Counters since open.
    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.stats;
        StoreStats {
            wal_syncs: c.wal_syncs.load(Ordering::Relaxed),
            wal_records: c.wal_records.load(Ordering::Relaxed),
            wal_bytes: c.wal_bytes.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            rows_flushed: c.rows_flushed.load(Ordering::Relaxed),
            parquet_files_written: c.files_written.load(Ordering::Relaxed),
            parquet_files_scanned: c.parquet_files_scanned.load(Ordering::Relaxed),
            buffered_rows: self.shared.buffer().total_rows(),
            reserved_bytes: self.shared.reserved_bytes.load(Ordering::Relaxed),
        }
    }

    /// The catalog database, for crates that keep their own tables in it.
    pub fn catalog(&self) -> &Catalog {
        &self.shared.catalog
    }

    /// The (canonical) data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// Stops accepting appends, waits for the pending ones, flushes everything to Parquet and closes the
    /// catalog. Other holders of the store get [`StoreError::Closed`] from their appends afterwards.
    /// Closing again does nothing.
    pub async fn close(&self) -> Result<()> {
        let workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(Workers { writer, flusher, shutdown }) = workers {
            if let Some(tx) = &self.wal_tx {
                // The writer may already have stopped (a panic); then there is nobody to tell.
                let _ = tx.send(WalCommand::Stop);
            }
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(blocking_failed("WAL writer"))?
                .map_err(|_| StoreError::Task { task: "WAL writer", detail: "panicked".into() })?;
            // The flusher may already have stopped; then there is nobody to tell.
            let _ = shutdown.send(true);
            flusher.await.map_err(blocking_failed("flusher"))?;
            self.shared.flush().await?;
        }
        self.shared.catalog.close().await;
        // Another process (or this one) may open the directory from now on.
        self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let workers = self.workers.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(Workers { writer, flusher, .. }) = workers {
            flusher.abort();
            // The writer finishes the appends already queued; joining keeps it from writing into the
            // directory after the lock below is released.
            if let Some(tx) = &self.wal_tx {
                let _ = tx.send(WalCommand::Stop);
            }
            if writer.join().is_err() {
                tracing::error!("the WAL writer thread panicked");
            }
        }
    }
}

fn session_for(shared: &Arc<Shared>) -> SessionContext {
    let ctx = SessionContext::new();
    for table in Table::ALL {
        // Registering into a fresh context only fails on a duplicate name, and the names are distinct.
        let provider = Arc::new(StoreTable { table, shared: Arc::clone(shared) });
        if let Err(e) = ctx.register_table(table.name(), provider) {
            tracing::error!(table = %table, error = %e, "could not register table");
        }
    }
    ctx
}

fn lock_data_dir(data_dir: &Path) -> Result<File> {
    let path = data_dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("opening lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            Err(StoreError::Locked { data_dir: data_dir.to_path_buf(), lock_file: path })
        }
        Err(fs::TryLockError::Error(e)) => Err(io_err("locking", &path)(e)),
    }
}

/// The WAL writer thread: group commit. Sequence numbers are consumed even by a failed group, because
/// part of it may have reached the disk; reusing them would give two different records one number.
fn wal_writer(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<WalCommand>,
    mut segment: SegmentWriter,
    mut next_seq: u64,
) {
    let mut group: Vec<AppendRequest> = Vec::new();
    let mut frames: Vec<u8> = Vec::new();
    let mut stopping = false;
    while !stopping {
        let Some(WalCommand::Append(first)) = rx.blocking_recv() else { break };
        let mut bytes = first.payload.len();
        group.push(first);
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(WalCommand::Append(request)) => {
                    bytes += request.payload.len();
                    group.push(request);
                }
                Ok(WalCommand::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        frames.clear();
        let first_seq = next_seq;
        for (i, request) in group.iter().enumerate() {
            wal::encode_frame(&mut frames, first_seq + i as u64, request.table, &request.payload);
        }
        next_seq += group.len() as u64;
        match segment.write_group(first_seq, &frames) {
            Ok(()) => {
                shared.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
                shared.stats.wal_records.fetch_add(group.len() as u64, Ordering::Relaxed);
                shared.stats.wal_bytes.fetch_add(frames.len() as u64, Ordering::Relaxed);
                let mut replies = Vec::with_capacity(group.len());
                let flush_due = {
                    let mut buffer = shared.buffer();
                    for (i, request) in group.drain(..).enumerate() {
                        buffer.insert(request.table, first_seq + i as u64, request.batch);
                        replies.push(request.reply);
                    }
                    shared.flush_wanted_for_size(&buffer)
                };
                if flush_due {
                    shared.flush_wanted.notify_one();
                }
                for reply in replies {
                    // An appender that stopped waiting still has its rows stored; nothing to undo.
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = group.len(), "WAL write failed; appends rejected");
                let detail = e.to_string();
                for request in group.drain(..) {
                    shared.release(footprint(&request.batch));
                    let _ = request.reply.send(Err(StoreError::WalWrite(detail.clone())));
                }
            }
        }
        // A burst can grow the frame buffer to the group limit; don't keep that much idle memory.
        if frames.capacity() > 2 * MAX_GROUP_BYTES {
            frames = Vec::new();
        }
    }
    tracing::debug!("WAL writer stopped");
}

/// How often the flusher applies `StoreConfig::retention`.
const RETENTION_EVERY: Duration = Duration::from_secs(300);

/// The flusher task: flushes when the buffer is big (woken by the writer) or old (checked on a timer),
/// and applies the retention, if configured, at start and every [`RETENTION_EVERY`].
async fn flusher(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let tick = (shared.config.flush_interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut next_retention = tokio::time::Instant::now();
    loop {
        if let Some(max_age) = shared.config.retention
            && tokio::time::Instant::now() >= next_retention
        {
            next_retention += RETENTION_EVERY;
            // A failed pass (catalog unreachable) is retried at the next one; nothing is lost meanwhile.
            if let Err(e) = retention::apply(&shared, max_age).await {
                tracing::warn!(error = %e, "retention failed; retrying in {RETENTION_EVERY:?}");
            }
        }
        tokio::select! {
            _ = shared.flush_wanted.notified() => {}
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        if shared.flush_due()
            && let Err(e) = shared.flush().await
        {
            tracing::warn!(error = %e, "flush failed; rows stay in memory and in the WAL, retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
