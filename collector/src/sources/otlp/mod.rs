//! OTLP: traces (`TraceService/Export`, `POST /v1/traces`) become spans; logs (`LogsService/Export`,
//! `POST /v1/logs`) from Envoy's OpenTelemetry access logger (Istio's `envoyOtelAls` provider) become
//! request records. Other log records are rejected and counted in `partial_success`: meshlens stores
//! request telemetry, not application logs.

pub mod convert;
pub mod grpc;
pub mod http;
