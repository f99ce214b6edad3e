//! `meshlens serve` and `meshlens import` end to end: the real binary on port 0 with a temporary store,
//! real clients (tonic OTLP and ALS clients, plain HTTP, the OpenTelemetry Python SDK), and `meshlens
//! query` to see what was stored.

mod als;
mod harness;
mod import;
mod malformed;
mod otlp;
mod python_sdk;
mod retention;
