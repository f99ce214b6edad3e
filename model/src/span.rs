//! The span record: one OTLP span, flattened for storage and analysis.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One span of a distributed trace. HTTP and peer attributes the analyzer joins on are lifted into typed
/// fields; every other attribute is kept in `attributes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpanRecord {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub duration_ms: f64,
    pub status_code: SpanStatus,
    pub status_message: Option<String>,
    /// Resource attribute `service.name`.
    pub service_name: Option<String>,
    /// Resource attribute `service.namespace` or `k8s.namespace.name`.
    pub service_namespace: Option<String>,
    /// `http.request.method` (or the older `http.method`).
    pub http_method: Option<String>,
    /// `http.response.status_code` (or `http.status_code`).
    pub http_status_code: Option<u16>,
    /// `url.full`, `url.path` or `http.url`.
    pub http_url: Option<String>,
    /// `http.route`.
    pub http_route: Option<String>,
    /// `server.address` / `net.peer.name` / `peer.service`.
    pub peer_service: Option<String>,
    /// `upstream_cluster` as Istio's Envoy tracer sets it.
    pub upstream_cluster: Option<String>,
    /// `guid:x-request-id` (Envoy) or `http.request.header.x-request-id`.
    pub request_id: Option<String>,
    /// All other resource and span attributes, stringified.
    pub attributes: BTreeMap<String, String>,
}

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// Maps the OTLP enum value; out-of-range values are `Unspecified`.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// OTLP span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    Error,
}

impl SpanStatus {
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_enums_map_and_tolerate_unknown_values() {
        assert_eq!(SpanKind::from_otlp(2), SpanKind::Server);
        assert_eq!(SpanKind::from_otlp(99), SpanKind::Unspecified);
        assert_eq!(SpanStatus::from_otlp(2), SpanStatus::Error);
        assert_eq!(SpanStatus::from_otlp(-1), SpanStatus::Unset);
    }
}
