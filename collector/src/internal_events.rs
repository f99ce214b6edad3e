//! Self-telemetry, the way Vector does it: every noteworthy thing a receiver does is a typed event whose
//! `emit` both logs and counts, so logs and metrics cannot drift apart. [`Telemetry::render`] writes the
//! counts in the Prometheus text format for `/metrics`.
//!
//! | metric                                             | type      | labels              |
//! |----------------------------------------------------|-----------|---------------------|
//! | `meshlens_collector_received_records_total`        | counter   | `receiver`,`format` |
//! | `meshlens_collector_stored_records_total`          | counter   | `receiver`,`format` |
//! | `meshlens_collector_rejected_records_total`        | counter   | `receiver`,`format` |
//! | `meshlens_collector_refused_records_total`         | counter   | `receiver`,`format` |
//! | `meshlens_collector_invalid_requests_total`        | counter   | `receiver`          |
//! | `meshlens_collector_ingest_duration_seconds`       | histogram | `receiver`          |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The receiver an event happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Receiver {
    OtlpGrpc,
    OtlpHttp,
    EnvoyAls,
    AccessLogHttp,
    Import,
}

impl Receiver {
    pub fn as_str(self) -> &'static str {
        match self {
            Receiver::OtlpGrpc => "otlp_grpc",
            Receiver::OtlpHttp => "otlp_http",
            Receiver::EnvoyAls => "envoy_als",
            Receiver::AccessLogHttp => "accesslog_http",
            Receiver::Import => "import",
        }
    }
}

/// What kind of item was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    OtlpSpans,
    OtlpLogs,
    AlsHttp,
    AlsTcp,
    AccessLog,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OtlpSpans => "otlp_spans",
            Format::OtlpLogs => "otlp_logs",
            Format::AlsHttp => "als_http",
            Format::AlsTcp => "als_tcp",
            Format::AccessLog => "access_log",
        }
    }
}

/// An event that logs itself and updates the counters.
pub trait InternalEvent {
    fn emit(self, telemetry: &Telemetry);
}

/// Items arrived and were converted (`rejected` of them could not be).
#[derive(Debug)]
pub struct RecordsReceived {
    pub receiver: Receiver,
    pub format: Format,
    pub count: usize,
}

impl InternalEvent for RecordsReceived {
    fn emit(self, t: &Telemetry) {
        tracing::trace!(
            receiver = self.receiver.as_str(),
            format = self.format.as_str(),
            count = self.count,
            "received"
        );
        t.add(Counter::Received, self.receiver, self.format, self.count);
    }
}

/// Records are durable in the store; `elapsed` is the time since the request arrived.
#[derive(Debug)]
pub struct RecordsStored {
    pub receiver: Receiver,
    pub format: Format,
    pub count: usize,
    pub elapsed: Duration,
}

impl InternalEvent for RecordsStored {
    fn emit(self, t: &Telemetry) {
        tracing::debug!(
            receiver = self.receiver.as_str(),
            format = self.format.as_str(),
            count = self.count,
            elapsed_ms = self.elapsed.as_secs_f64() * 1000.0,
            "stored"
        );
        t.add(Counter::Stored, self.receiver, self.format, self.count);
        t.observe(self.receiver, self.elapsed);
    }
}

/// Items that could not be converted. The sender's problem, so logged at debug level only: a warning per
/// bad batch would let one misconfigured proxy flood the collector's log.
#[derive(Debug)]
pub struct RecordsRejected<'a> {
    pub receiver: Receiver,
    pub format: Format,
    pub count: usize,
    pub message: &'a str,
}

impl InternalEvent for RecordsRejected<'_> {
    fn emit(self, t: &Telemetry) {
        tracing::debug!(
            receiver = self.receiver.as_str(),
            format = self.format.as_str(),
            count = self.count,
            message = self.message,
            "rejected"
        );
        t.add(Counter::Rejected, self.receiver, self.format, self.count);
    }
}

/// The store did not take a batch; the sender was told to retry.
#[derive(Debug)]
pub struct RecordsRefused<'a> {
    pub receiver: Receiver,
    pub format: Format,
    pub count: usize,
    pub error: &'a meshlens_store::StoreError,
}

impl InternalEvent for RecordsRefused<'_> {
    fn emit(self, t: &Telemetry) {
        tracing::warn!(receiver = self.receiver.as_str(), format = self.format.as_str(), count = self.count,
            error = %self.error, "store refused a batch; the sender is asked to retry");
        t.add(Counter::Refused, self.receiver, self.format, self.count);
    }
}

/// A request that could not be decoded at all (or was too large).
#[derive(Debug)]
pub struct RequestInvalid<'a> {
    pub receiver: Receiver,
    pub reason: &'a str,
}

impl InternalEvent for RequestInvalid<'_> {
    fn emit(self, t: &Telemetry) {
        tracing::debug!(receiver = self.receiver.as_str(), reason = self.reason, "invalid request");
        t.lock().invalid_requests.entry(self.receiver).and_modify(|n| *n += 1).or_insert(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Counter {
    Received,
    Stored,
    Rejected,
    Refused,
}

impl Counter {
    const ALL: [Counter; 4] = [Counter::Received, Counter::Stored, Counter::Rejected, Counter::Refused];

    fn name_and_help(self) -> (&'static str, &'static str) {
        match self {
            Counter::Received => ("received_records_total", "Items received (spans, log records, ALS entries, lines)."),
            Counter::Stored => ("stored_records_total", "Records made durable in the store."),
            Counter::Rejected => {
                ("rejected_records_total", "Items that could not be converted (reported to the sender).")
            }
            Counter::Refused => {
                ("refused_records_total", "Records the store did not take; the sender was told to retry.")
            }
        }
    }
}

/// Upper bounds of the ingest latency histogram, seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<(Counter, Receiver, Format), u64>,
    invalid_requests: BTreeMap<Receiver, u64>,
    latency: BTreeMap<Receiver, Histogram>,
}

/// The counters of one collector process. Cheap to update: one uncontended mutex per event, and events
/// come per batch, not per record.
#[derive(Debug, Default)]
pub struct Telemetry {
    inner: Mutex<Inner>,
}

impl Telemetry {
    pub fn emit(&self, event: impl InternalEvent) {
        event.emit(self);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters stay meaningful even if a thread panicked while holding the lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, counter: Counter, receiver: Receiver, format: Format, count: usize) {
        if count > 0 {
            *self.lock().counters.entry((counter, receiver, format)).or_default() += count as u64;
        }
    }

    fn observe(&self, receiver: Receiver, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut inner = self.lock();
        let h = inner.latency.entry(receiver).or_default();
        for (bound, count) in BUCKETS.iter().zip(&mut h.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// A counter's value, for tests and summaries.
    pub fn stored(&self, receiver: Receiver, format: Format) -> u64 {
        self.lock().counters.get(&(Counter::Stored, receiver, format)).copied().unwrap_or(0)
    }

    /// All metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        for counter in Counter::ALL {
            let (name, help) = counter.name_and_help();
            let _ = writeln!(out, "# HELP meshlens_collector_{name} {help}\n# TYPE meshlens_collector_{name} counter");
            for ((c, receiver, format), value) in &inner.counters {
                if *c == counter {
                    let _ = writeln!(
                        out,
                        "meshlens_collector_{name}{{receiver=\"{}\",format=\"{}\"}} {value}",
                        receiver.as_str(),
                        format.as_str()
                    );
                }
            }
        }
        out.push_str(
            "# HELP meshlens_collector_invalid_requests_total Requests that could not be decoded or were too large.\n\
             # TYPE meshlens_collector_invalid_requests_total counter\n",
        );
        for (receiver, value) in &inner.invalid_requests {
            let _ = writeln!(
                out,
                "meshlens_collector_invalid_requests_total{{receiver=\"{}\"}} {value}",
                receiver.as_str()
            );
        }
        out.push_str(
            "# HELP meshlens_collector_ingest_duration_seconds Time from a request's arrival until its records were durable.\n\
             # TYPE meshlens_collector_ingest_duration_seconds histogram\n",
        );
        for (receiver, h) in &inner.latency {
            let r = receiver.as_str();
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "meshlens_collector_ingest_duration_seconds_bucket{{receiver=\"{r}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "meshlens_collector_ingest_duration_seconds_bucket{{receiver=\"{r}\",le=\"+Inf\"}} {}\n\
                 meshlens_collector_ingest_duration_seconds_sum{{receiver=\"{r}\"}} {}\n\
                 meshlens_collector_ingest_duration_seconds_count{{receiver=\"{r}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_and_render_as_prometheus_text() {
        let t = Telemetry::default();
        t.emit(RecordsReceived { receiver: Receiver::OtlpHttp, format: Format::OtlpSpans, count: 3 });
        t.emit(RecordsStored {
            receiver: Receiver::OtlpHttp,
            format: Format::OtlpSpans,
            count: 2,
            elapsed: Duration::from_millis(3),
        });
        t.emit(RecordsRejected { receiver: Receiver::OtlpHttp, format: Format::OtlpSpans, count: 1, message: "x" });
        t.emit(RequestInvalid { receiver: Receiver::EnvoyAls, reason: "truncated" });
        let text = t.render();
        assert!(
            text.contains(
                "meshlens_collector_received_records_total{receiver=\"otlp_http\",format=\"otlp_spans\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("meshlens_collector_stored_records_total{receiver=\"otlp_http\",format=\"otlp_spans\"} 2\n")
        );
        assert!(
            text.contains(
                "meshlens_collector_rejected_records_total{receiver=\"otlp_http\",format=\"otlp_spans\"} 1\n"
            )
        );
        assert!(text.contains("meshlens_collector_invalid_requests_total{receiver=\"envoy_als\"} 1\n"));
        assert!(
            text.contains(
                "meshlens_collector_ingest_duration_seconds_bucket{receiver=\"otlp_http\",le=\"0.0025\"} 0\n"
            )
        );
        assert!(
            text.contains("meshlens_collector_ingest_duration_seconds_bucket{receiver=\"otlp_http\",le=\"0.005\"} 1\n")
        );
        assert!(text.contains("meshlens_collector_ingest_duration_seconds_count{receiver=\"otlp_http\"} 1\n"));
        assert_eq!(t.stored(Receiver::OtlpHttp, Format::OtlpSpans), 2);
    }
}
