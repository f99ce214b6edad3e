//! The collector: receivers and format adapters that turn proxy telemetry into the model's
//! [`RequestRecord`](meshlens_model::RequestRecord)s.
//!
//! Today the crate holds the access-log side: [`formats`] parses one line of Istio text or JSON, Envoy's
//! default text or meshlens' own proxy JSON into a record; [`normalize`] derives what every format infers the
//! same way (direction, reporter, destination, mTLS) from cluster names and SNI; [`lines`] splits a byte
//! stream into bounded lines so that one bad line costs one record, not the stream. Network receivers (Envoy
//! ALS, OTLP) will live here too. Parsing is synchronous, allocation-light and regex-free, because it runs
//! once per proxied request.

pub mod error;
pub mod formats;
pub mod lines;
pub mod normalize;

pub use error::{FieldRef, MAX_JSON_FIELDS, MAX_LINE_BYTES, ParseError};
pub use formats::{LineFormat, LineParser, parse_bytes, parse_line};
pub use lines::LineReader;
