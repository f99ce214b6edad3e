//! The normalized request record: one HTTP request as seen by one proxy.
//!
//! Every source format (Istio text/JSON access logs, Envoy ALS entries, OTLP log records, meshlens' own
//! proxy) is mapped to this one shape. The field names are a public contract: they are the keys of
//! `meshlens parse-log` output and the column names of the `requests` SQL table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One HTTP request as reported by one proxy. Absent values are `None` (serialized as `null`), never `"-"`
/// or `""`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    /// When the request started (Envoy `%START_TIME%`), UTC.
    pub timestamp: DateTime<Utc>,
    /// Total time from first byte received to last byte sent, milliseconds.
    pub duration_ms: Option<u64>,
    /// Time the upstream took to answer (`x-envoy-upstream-service-time`), milliseconds.
    pub upstream_service_time_ms: Option<u64>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: Option<String>,
    /// The `:authority` / `Host` header.
    pub authority: Option<String>,
    /// HTTP response code; `None` when no response was sent (Envoy logs `0`).
    pub status: Option<u16>,
    /// Envoy response flags (`UH`, `UF`, `UO`, `NR`, `URX`, ...). Empty when there were none.
    pub response_flags: Vec<String>,
    pub response_code_details: Option<String>,
    pub bytes_received: Option<u64>,
    pub bytes_sent: Option<u64>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// W3C trace id, 32 lowercase hex digits.
    pub trace_id: Option<String>,
    /// W3C span id, 16 lowercase hex digits.
    pub span_id: Option<String>,
    pub user_agent: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub reporter: Reporter,
    pub direction: Direction,
    /// Envoy cluster, e.g. `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub upstream_cluster: Option<String>,
    /// `IP:port` of the upstream endpoint.
    pub upstream_host: Option<String>,
    pub downstream_local_address: Option<String>,
    pub downstream_remote_address: Option<String>,
    /// TLS SNI the downstream sent.
    pub requested_server_name: Option<String>,
    pub route_name: Option<String>,
    /// Destination service FQDN, e.g. `reviews.default.svc.cluster.local`.
    pub destination_service: Option<String>,
    pub destination_port: Option<u16>,
    pub destination_subset: Option<String>,
    pub destination_namespace: Option<String>,
    pub destination_workload: Option<String>,
    /// SPIFFE identity of the server side.
    pub destination_principal: Option<String>,
    pub source_workload: Option<String>,
    pub source_namespace: Option<String>,
    /// SPIFFE identity of the client side.
    pub source_principal: Option<String>,
    pub mtls: Mtls,
    pub tls_version: Option<String>,
    /// Upstream attempts made for this request (1 = no retry).
    pub attempts: Option<u32>,
    /// The format the record was parsed from.
    pub source_format: SourceFormat,
}

/// Which proxy reported the record, in Istio's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    /// The client-side sidecar.
    Source,
    /// The server-side sidecar.
    Destination,
    /// An ingress or egress gateway.
    Gateway,
    #[default]
    Unknown,
}

/// Which way the request crossed the reporting proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
    #[default]
    Unknown,
}

/// Whether the hop was mutually authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mtls {
    Mutual,
    Plaintext,
    #[default]
    Unknown,
}

/// The format a record was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// Istio's TEXT access-log encoding (any version).
    IstioText,
    /// Istio's JSON access-log encoding.
    IstioJson,
    /// Envoy's built-in default text format.
    EnvoyText,
    /// Envoy gRPC Access Log Service entry.
    EnvoyAls,
    /// OTLP log record from Envoy's OpenTelemetry access logger (Istio `envoyOtelAls`).
    OtlpLog,
    /// meshlens' own proxy JSON.
    MeshlensJson,
    #[default]
    Unknown,
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// The name used in JSON, SQL and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok(Self::$variant),)+
                    _ => Err(UnknownVariant { type_name: stringify!($ty), value: s.to_owned() }),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(Reporter { Source => "source", Destination => "destination", Gateway => "gateway", Unknown => "unknown" });
str_enum!(Direction { Inbound => "inbound", Outbound => "outbound", Unknown => "unknown" });
str_enum!(Mtls { Mutual => "mutual", Plaintext => "plaintext", Unknown => "unknown" });
str_enum!(SourceFormat {
    IstioText => "istio_text",
    IstioJson => "istio_json",
    EnvoyText => "envoy_text",
    EnvoyAls => "envoy_als",
    OtlpLog => "otlp_log",
    MeshlensJson => "meshlens_json",
    Unknown => "unknown",
});

/// A string that names no variant of an enum of the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {type_name} {value:?}")]
pub struct UnknownVariant {
    pub type_name: &'static str,
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_serialize_as_null() {
        let record = RequestRecord { method: Some("GET".into()), ..Default::default() };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["method"], "GET");
        assert!(json["path"].is_null());
        assert_eq!(json["mtls"], "unknown");
        assert_eq!(json["response_flags"], serde_json::json!([]));
    }

    #[test]
    fn enums_round_trip_through_their_names() {
        for mtls in [Mtls::Mutual, Mtls::Plaintext, Mtls::Unknown] {
            assert_eq!(mtls.as_str().parse::<Mtls>().unwrap(), mtls);
        }
        assert_eq!("inbound".parse::<Direction>().unwrap(), Direction::Inbound);
        let err = "sideways".parse::<Direction>().unwrap_err();
        assert_eq!(err.to_string(), "unknown Direction \"sideways\"");
    }

    #[test]
    fn record_round_trips_through_json() {
        let record = RequestRecord {
            status: Some(503),
            response_flags: vec!["UO".into(), "URX".into()],
            reporter: Reporter::Source,
            direction: Direction::Outbound,
            source_format: SourceFormat::IstioText,
            ..Default::default()
        };
        let back: RequestRecord = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(back, record);
    }
}
