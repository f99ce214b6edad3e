//! The one path every receiver's records take into the store, so that acknowledgement semantics are the
//! same everywhere: a batch is acknowledged only after [`Store::append_requests`] / [`Store::append_spans`]
//! returned, i.e. after the WAL fsync; a store error becomes an [`IngestError`] that receivers turn into
//! "retry later" (HTTP 503 + `Retry-After`, gRPC `UNAVAILABLE` + `RetryInfo`).

use crate::internal_events::{
    Format, Receiver, RecordsReceived, RecordsRefused, RecordsRejected, RecordsStored, Telemetry,
};
use crate::sources::Batch;
use meshlens_model::{RequestRecord, SpanRecord};
use meshlens_store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a sender is asked to wait when the store's memory budget is used up: about the time a flush
/// of a full buffer takes.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a sender is asked to wait when the store failed (disk full, WAL error, shutting down).
pub const FAILED_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What happened to an accepted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stored: usize,
    pub rejected: usize,
    /// The English rejection message (see [`Batch::rejection_message`]), when something was rejected.
    pub message: Option<String>,
}

/// The store did not take the batch; nothing of it was acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct IngestError {
    /// How long the sender should wait before retrying.
    pub retry_after: Duration,
    #[source]
    pub source: StoreError,
}

impl IngestError {
    fn new(source: StoreError) -> Self {
        let retry_after = if source.is_retryable() { BUSY_RETRY_AFTER } else { FAILED_RETRY_AFTER };
        IngestError { retry_after, source }
    }
}

/// A handle on the store plus the telemetry; cheap to clone into every receiver.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
}

impl Ingest {
    pub fn new(store: Arc<Store>, telemetry: Arc<Telemetry>) -> Self {
        Ingest { store, telemetry }
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Stores the request records of `batch`. `noun` names one item in the rejection message ("log
    /// record", "entry", "line"); `started` is when the request arrived, for the latency histogram.
    pub async fn requests(
        &self,
        receiver: Receiver,
        format: Format,
        noun: &str,
        started: Instant,
        batch: Batch<RequestRecord>,
    ) -> Result<Outcome, IngestError> {
        self.ingest(receiver, format, noun, started, batch, async |store, records| store.append_requests(records).await)
            .await
    }

    /// Stores the spans of `batch`; see [`Ingest::requests`].
    pub async fn spans(
        &self,
        receiver: Receiver,
        started: Instant,
        batch: Batch<SpanRecord>,
    ) -> Result<Outcome, IngestError> {
        self.ingest(receiver, Format::OtlpSpans, "span", started, batch, async |store, records| {
            store.append_spans(records).await
        })
        .await
    }

    async fn ingest<T>(
        &self,
        receiver: Receiver,
        format: Format,
        noun: &str,
        started: Instant,
        batch: Batch<T>,
        append: impl AsyncFnOnce(&Store, Vec<T>) -> Result<(), StoreError>,
    ) -> Result<Outcome, IngestError> {
        let t = &self.telemetry;
        t.emit(RecordsReceived { receiver, format, count: batch.received() });
        let message = batch.rejection_message(noun);
        if let Some(message) = &message {
            t.emit(RecordsRejected { receiver, format, count: batch.rejected.len(), message });
        }
        let (stored, rejected) = (batch.records.len(), batch.rejected.len());
        if let Err(error) = append(&self.store, batch.records).await {
            t.emit(RecordsRefused { receiver, format, count: stored, error: &error });
            return Err(IngestError::new(error));
        }
        t.emit(RecordsStored { receiver, format, count: stored, elapsed: started.elapsed() });
        Ok(Outcome { stored, rejected, message })
    }
}
