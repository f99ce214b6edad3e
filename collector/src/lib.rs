//! The collector: receivers and format adapters that turn proxy telemetry into the model's
//! [`RequestRecord`](meshlens_model::RequestRecord)s.
//!
//! - [`formats`] parses one line of Istio text or JSON, Envoy's default text or meshlens' own proxy JSON
//!   into a record; [`normalize`] derives what every format infers the same way (direction, reporter,
//!   destination, mTLS) from cluster names and SNI; [`lines`] splits a byte stream into bounded lines so
//!   that one bad line costs one record, not the stream. Parsing is synchronous, allocation-light and
//!   regex-free, because it runs once per proxied request.
//! - [`sources`] converts OTLP traces and logs, Envoy ALS entries and access-log lines, and receives them
//!   over gRPC and HTTP; [`attribution`] names the workloads at both ends of each record.
//! - [`ingest`] is the one path into the store, with one acknowledgement rule: nothing is acknowledged
//!   before it is durable. [`internal_events`] logs and counts what the receivers do.
//! - [`kube`] watches a cluster's Kubernetes and Istio resources and keeps a live mesh configuration.
//! - [`server`] binds and runs the listeners; [`api`] is the API listener's router (probes, metrics).

pub mod api;
pub mod attribution;
pub mod error;
pub mod formats;
pub mod ingest;
pub mod internal_events;
pub mod kube;
pub mod lines;
pub mod normalize;
pub mod server;
pub mod sources;

pub use error::{FieldRef, MAX_JSON_FIELDS, MAX_LINE_BYTES, ParseError};
pub use formats::{LineFormat, LineParser, parse_bytes, parse_line};
pub use lines::LineReader;
