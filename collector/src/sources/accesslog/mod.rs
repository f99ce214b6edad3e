//! Access-log lines, each detected on its own (Istio text or JSON, Envoy text, meshlens JSON — so a body
//! may mix text lines and NDJSON): `POST /v1/accesslogs` on the OTLP/HTTP listener, and files read by
//! `meshlens import`.

pub mod convert;
pub mod http;
