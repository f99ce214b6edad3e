//! Telemetry sources, one directory per source with the same shape (the layout of Vector's sources):
//!
//! - `mod.rs` — what the source accepts, and its receiver entry points;
//! - `convert.rs` — wire messages to model records: pure, synchronous, and total (every item becomes a
//!   record or a [`Rejection`] with a reason; nothing panics on input);
//! - `grpc.rs` / `http.rs` — the network receivers, which hand converted batches to [`crate::ingest`].
//!
//! | source      | wire                                                    | records          |
//! |-------------|---------------------------------------------------------|------------------|
//! | `otlp`      | OTLP traces and logs, gRPC and HTTP (protobuf or JSON)  | spans, requests  |
//! | `als`       | Envoy `AccessLogService/StreamAccessLogs` (gRPC)        | requests         |
//! | `accesslog` | access-log lines over HTTP, and files (`meshlens import`) | requests       |

pub mod accesslog;
pub mod als;
pub mod body;
pub mod grpc_status;
pub mod otlp;

use crate::attribution::SharedAttributor;
use crate::ingest::Ingest;
use std::fmt;

/// What every receiver needs: the ingest path and the attribution rules.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub ingest: Ingest,
    /// Replaced when the mesh configuration changes; take `current()` once per batch.
    pub attributor: SharedAttributor,
}

/// How many rejection reasons a response or summary quotes; the count is always complete.
pub const MAX_QUOTED_REJECTIONS: usize = 10;

/// One item of a request that did not become a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based position of the item in its request (span, log record, entry or line number).
    pub item: u64,
    pub reason: String,
}

/// What one request converted to: the records, and the items rejected on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    pub records: Vec<T>,
    pub rejected: Vec<Rejection>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch { records: Vec::new(), rejected: Vec::new() }
    }
}

impl<T> Batch<T> {
    /// Items seen: converted plus rejected.
    pub fn received(&self) -> usize {
        self.records.len() + self.rejected.len()
    }

    /// The English message OTLP's `partial_success.error_message` and the access-log receiver carry: how
    /// many `noun`s were rejected, and why for the first few. `None` when nothing was rejected.
    pub fn rejection_message(&self, noun: &str) -> Option<String> {
        (!self.rejected.is_empty()).then(|| RejectionMessage { noun, rejected: &self.rejected }.to_string())
    }
}

struct RejectionMessage<'a> {
    noun: &'a str,
    rejected: &'a [Rejection],
}

impl fmt::Display for RejectionMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.rejected.len();
        write!(f, "{n} {}{} rejected: ", self.noun, if n == 1 { "" } else { "s" })?;
        for (i, r) in self.rejected.iter().take(MAX_QUOTED_REJECTIONS).enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{} {}: {}", self.noun, r.item, r.reason)?;
        }
        if n > MAX_QUOTED_REJECTIONS {
            write!(f, "; and {} more", n - MAX_QUOTED_REJECTIONS)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_messages_count_all_and_quote_the_first_few() {
        let mut batch = Batch::<()>::default();
        assert_eq!(batch.rejection_message("span"), None);
        batch.rejected.push(Rejection { item: 2, reason: "bad id".into() });
        assert_eq!(batch.rejection_message("span").unwrap(), "1 span rejected: span 2: bad id");
        batch.rejected = (1..=12).map(|item| Rejection { item, reason: "x".into() }).collect();
        let message = batch.rejection_message("line").unwrap();
        assert!(message.starts_with("12 lines rejected: line 1: x; line 2: x"), "{message}");
        assert!(message.ends_with("line 10: x; and 2 more"), "{message}");
    }
}
