//! Envoy access-log entries (`envoy.data.accesslog.v3`) to request records.
//!
//! The common properties carry what Istio's text format logs, in typed form, plus what no text line has:
//! the TLS session. A peer certificate with a URI SAN means the downstream presented a client certificate,
//! i.e. mutual TLS, and the SAN is its SPIFFE identity.

use crate::attribution::{Attributor, ProxyIdentity};
use crate::normalize::derive;
use crate::sources::{Batch, Rejection};
use chrono::{DateTime, Utc};
use envoy_types::pb::envoy::config::core::v3::{Address, RequestMethod, address, socket_address};
use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::certificate_properties::subject_alt_name::San;
use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::{CertificateProperties, TlsVersion};
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, HttpAccessLogEntry, ResponseFlags, TcpAccessLogEntry, TlsProperties, http_access_log_entry,
};
use envoy_types::pb::google::protobuf::{Duration, Timestamp};
use meshlens_model::{Direction, Mtls, RequestRecord, SourceFormat};

/// Converts one message's HTTP entries. `first_item` numbers the entries across a stream.
pub fn http_entries(
    entries: Vec<HttpAccessLogEntry>,
    first_item: u64,
    proxy: Option<&ProxyIdentity>,
    attributor: &Attributor,
) -> Batch<RequestRecord> {
    convert_all(entries, first_item, http_entry, proxy, attributor)
}

/// Converts one message's TCP entries (one record per connection; no method, path or status).
pub fn tcp_entries(
    entries: Vec<TcpAccessLogEntry>,
    first_item: u64,
    proxy: Option<&ProxyIdentity>,
    attributor: &Attributor,
) -> Batch<RequestRecord> {
    convert_all(entries, first_item, tcp_entry, proxy, attributor)
}

fn convert_all<E>(
    entries: Vec<E>,
    first_item: u64,
    convert: impl Fn(E) -> Result<RequestRecord, String>,
    proxy: Option<&ProxyIdentity>,
    attributor: &Attributor,
) -> Batch<RequestRecord> {
    let mut batch = Batch::default();
    for (item, entry) in (first_item..).zip(entries) {
        match convert(entry) {
            Ok(mut record) => {
                attributor.attribute(&mut record, proxy);
                batch.records.push(record);
            }
            Err(reason) => batch.rejected.push(Rejection { item, reason }),
        }
    }
    batch
}

fn http_entry(entry: HttpAccessLogEntry) -> Result<RequestRecord, String> {
    let mut record = common(entry.common_properties.as_ref())?;
    record.protocol = match http_access_log_entry::HttpVersion::try_from(entry.protocol_version) {
        Ok(http_access_log_entry::HttpVersion::Http10) => Some("HTTP/1.0".into()),
        Ok(http_access_log_entry::HttpVersion::Http11) => Some("HTTP/1.1".into()),
        Ok(http_access_log_entry::HttpVersion::Http2) => Some("HTTP/2".into()),
        Ok(http_access_log_entry::HttpVersion::Http3) => Some("HTTP/3".into()),
        _ => None,
    };
    if let Some(request) = entry.request {
        record.method = RequestMethod::try_from(request.request_method)
            .ok()
            .filter(|m| *m != RequestMethod::MethodUnspecified)
            .map(|m| m.as_str_name().to_owned());
        // Istio's text format logs `X-ENVOY-ORIGINAL-PATH?:PATH`: the path before any rewrite.
        record.path = text(request.original_path).or_else(|| text(request.path));
        record.authority = text(request.authority);
        record.user_agent = text(request.user_agent);
        record.x_forwarded_for = text(request.forwarded_for);
        record.request_id = text(request.request_id);
        record.bytes_received = Some(request.request_body_bytes);
    }
    if let Some(response) = entry.response {
        record.status = match response.response_code.map(|c| c.value) {
            None | Some(0) => None,
            Some(code @ 1..=999) => Some(code as u16),
            Some(code) => return Err(format!("response.response_code {code} is not an HTTP status")),
        };
        record.response_code_details = text(response.response_code_details);
        record.bytes_sent = Some(response.response_body_bytes);
        record.upstream_service_time_ms =
            response.response_headers.get("x-envoy-upstream-service-time").and_then(|v| v.parse().ok());
    }
    Ok(record)
}

fn tcp_entry(entry: TcpAccessLogEntry) -> Result<RequestRecord, String> {
    let mut record = common(entry.common_properties.as_ref())?;
    if let Some(connection) = entry.connection_properties {
        record.bytes_received = Some(connection.received_bytes);
        record.bytes_sent = Some(connection.sent_bytes);
    }
    Ok(record)
}

/// The fields every entry shares, then the derivations (direction, destination, mTLS).
fn common(common: Option<&AccessLogCommon>) -> Result<RequestRecord, String> {
    let common = common.ok_or("common_properties is missing")?;
    let start = common.start_time.as_ref().ok_or("common_properties.start_time is missing")?;
    let mut record = RequestRecord {
        timestamp: timestamp(start).ok_or("common_properties.start_time is out of range")?,
        duration_ms: common.duration.as_ref().or(common.time_to_last_downstream_tx_byte.as_ref()).and_then(millis),
        response_flags: flag_letters(common.response_flags.as_ref()),
        upstream_cluster: text(common.upstream_cluster.clone()),
        upstream_host: common.upstream_remote_address.as_ref().and_then(socket),
        downstream_local_address: common.downstream_local_address.as_ref().and_then(socket),
        downstream_remote_address: common.downstream_remote_address.as_ref().and_then(socket),
        route_name: text(common.route_name.clone()),
        attempts: (common.upstream_request_attempt_count > 0).then_some(common.upstream_request_attempt_count),
        source_format: SourceFormat::EnvoyAls,
        ..Default::default()
    };
    let tls = common.tls_properties.as_ref();
    record.requested_server_name = tls.and_then(|t| text(t.tls_sni_hostname.clone()));
    derive(&mut record);
    apply_tls(&mut record, tls);
    Ok(record)
}

/// What the TLS session says, over what the SNI rules derived: a SPIFFE URI SAN on the peer's certificate
/// proves mutual TLS whatever the direction, and an inbound entry without TLS properties is plaintext.
fn apply_tls(record: &mut RequestRecord, tls: Option<&TlsProperties>) {
    let Some(tls) = tls else {
        if record.direction == Direction::Inbound {
            record.mtls = Mtls::Plaintext;
        }
        return;
    };
    record.tls_version = TlsVersion::try_from(tls.tls_version).ok().and_then(|v| match v {
        TlsVersion::VersionUnspecified => None,
        TlsVersion::TlSv1 => Some("TLSv1".into()),
        TlsVersion::TlSv11 => Some("TLSv1.1".into()),
        TlsVersion::TlSv12 => Some("TLSv1.2".into()),
        TlsVersion::TlSv13 => Some("TLSv1.3".into()),
    });
    record.source_principal = uri_san(tls.peer_certificate_properties.as_ref());
    record.destination_principal = uri_san(tls.local_certificate_properties.as_ref());
    if record.source_principal.as_deref().is_some_and(|p| p.starts_with("spiffe://")) {
        record.mtls = Mtls::Mutual;
    }
}

/// The certificate's SPIFFE URI SAN, or else its first URI SAN.
fn uri_san(cert: Option<&CertificateProperties>) -> Option<String> {
    let uris: Vec<&String> = cert?
        .subject_alt_name
        .iter()
        .filter_map(|san| match &san.san {
            Some(San::Uri(uri)) if !uri.is_empty() => Some(uri),
            _ => None,
        })
        .collect();
    uris.iter().find(|u| u.starts_with("spiffe://")).or(uris.first()).map(|u| (*u).clone())
}

/// Envoy's flag letters, in the order of its `%RESPONSE_FLAGS%` output.
fn flag_letters(flags: Option<&ResponseFlags>) -> Vec<String> {
    let Some(f) = flags else { return Vec::new() };
    let table: [(bool, &str); 27] = [
        (f.failed_local_healthcheck, "LH"),
        (f.no_healthy_upstream, "UH"),
        (f.upstream_request_timeout, "UT"),
        (f.local_reset, "LR"),
        (f.upstream_remote_reset, "UR"),
        (f.upstream_connection_failure, "UF"),
        (f.upstream_connection_termination, "UC"),
        (f.upstream_overflow, "UO"),
        (f.no_route_found, "NR"),
        (f.delay_injected, "DI"),
        (f.fault_injected, "FI"),
        (f.rate_limited, "RL"),
        (f.unauthorized_details.is_some(), "UAEX"),
        (f.rate_limit_service_error, "RLSE"),
        (f.downstream_connection_termination, "DC"),
        (f.upstream_retry_limit_exceeded, "URX"),
        (f.stream_idle_timeout, "SI"),
        (f.invalid_envoy_request_headers, "IH"),
        (f.downstream_protocol_error, "DPE"),
        (f.upstream_max_stream_duration_reached, "UMSDR"),
        (f.response_from_cache_filter, "RFCF"),
        (f.no_filter_config_found, "NFCF"),
        (f.duration_timeout, "DT"),
        (f.upstream_protocol_error, "UPE"),
        (f.no_cluster_found, "NC"),
        (f.overload_manager, "OM"),
        (f.dns_resolution_failure, "DF"),
    ];
    let mut letters: Vec<String> = table.iter().filter(|(set, _)| *set).map(|(_, l)| (*l).to_owned()).collect();
    if f.downstream_remote_reset {
        letters.push("DR".into());
    }
    letters
}

fn timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

fn millis(d: &Duration) -> Option<u64> {
    let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000;
    u64::try_from(ms).ok()
}

/// `IP:port` of a socket address (`[v6]:port` for IPv6); pipes and internal addresses have none.
fn socket(address: &Address) -> Option<String> {
    let Some(address::Address::SocketAddress(socket)) = &address.address else { return None };
    if socket.address.is_empty() {
        return None;
    }
    let port = match socket.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(port)) => port,
        _ => 0,
    };
    Some(if socket.address.contains(':') {
        format!("[{}]:{port}", socket.address)
    } else {
        format!("{}:{port}", socket.address)
    })
}

fn text(s: String) -> Option<String> {
    (!s.is_empty() && s != "-").then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::SocketAddress;
    use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::certificate_properties::SubjectAltName;
    use envoy_types::pb::envoy::data::accesslog::v3::{HttpRequestProperties, HttpResponseProperties};
    use envoy_types::pb::google::protobuf::UInt32Value;
    use meshlens_model::Reporter;

    fn addr(ip: &str, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    fn cert(uri: &str) -> Option<CertificateProperties> {
        Some(CertificateProperties {
            subject_alt_name: vec![SubjectAltName { san: Some(San::Uri(uri.into())) }],
            ..Default::default()
        })
    }

    fn inbound_entry() -> HttpAccessLogEntry {
        HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                start_time: Some(Timestamp { seconds: 1_717_256_224, nanos: 814_000_000 }),
                duration: Some(Duration { seconds: 0, nanos: 94_000_000 }),
                downstream_remote_address: addr("10.244.2.30", 58932),
                downstream_local_address: addr("10.244.1.27", 8080),
                upstream_remote_address: addr("10.244.1.27", 8080),
                upstream_cluster: "inbound|8080||".into(),
                route_name: "default".into(),
                upstream_request_attempt_count: 1,
                response_flags: Some(ResponseFlags {
                    upstream_overflow: true,
                    upstream_retry_limit_exceeded: true,
                    ..Default::default()
                }),
                tls_properties: Some(TlsProperties {
                    tls_version: TlsVersion::TlSv13 as i32,
                    tls_sni_hostname: "outbound_.8000_._.httpbin.default.svc.cluster.local".into(),
                    peer_certificate_properties: cert("spiffe://cluster.local/ns/default/sa/sleep"),
                    local_certificate_properties: cert("spiffe://cluster.local/ns/default/sa/httpbin"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            protocol_version: http_access_log_entry::HttpVersion::Http11 as i32,
            request: Some(HttpRequestProperties {
                request_method: RequestMethod::Get as i32,
                path: "/get".into(),
                authority: "httpbin:8000".into(),
                request_id: "f47fa353".into(),
                ..Default::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: 503 }),
                response_body_bytes: 81,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn http_entries_map_common_request_response_and_tls_properties() {
        let batch = http_entries(vec![inbound_entry()], 1, None, &Attributor::default());
        let r = &batch.records[0];
        assert_eq!(r.timestamp.to_rfc3339(), "2024-06-01T15:37:04.814+00:00");
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref(), r.protocol.as_deref()),
            (Some("GET"), Some("/get"), Some("HTTP/1.1"))
        );
        assert_eq!((r.status, r.duration_ms, r.bytes_sent), (Some(503), Some(94), Some(81)));
        assert_eq!(r.response_flags, ["UO", "URX"]);
        assert_eq!((r.direction, r.reporter, r.mtls), (Direction::Inbound, Reporter::Destination, Mtls::Mutual));
        assert_eq!(r.source_principal.as_deref(), Some("spiffe://cluster.local/ns/default/sa/sleep"));
        assert_eq!(r.destination_principal.as_deref(), Some("spiffe://cluster.local/ns/default/sa/httpbin"));
        assert_eq!(r.tls_version.as_deref(), Some("TLSv1.3"));
        assert_eq!(r.destination_service.as_deref(), Some("httpbin.default.svc.cluster.local"));
        assert_eq!(r.downstream_remote_address.as_deref(), Some("10.244.2.30:58932"));
        assert_eq!((r.attempts, r.source_format), (Some(1), SourceFormat::EnvoyAls));
        // The client's namespace comes from its SPIFFE identity.
        assert_eq!(r.source_namespace.as_deref(), Some("default"));
    }

    #[test]
    fn inbound_entries_without_tls_are_plaintext() {
        let mut entry = inbound_entry();
        entry.common_properties.as_mut().unwrap().tls_properties = None;
        let batch = http_entries(vec![entry], 1, None, &Attributor::default());
        assert_eq!(batch.records[0].mtls, Mtls::Plaintext);
        assert_eq!(batch.records[0].source_principal, None);
    }

    #[test]
    fn entries_without_start_time_or_with_bad_status_are_rejected() {
        let mut no_start = inbound_entry();
        no_start.common_properties.as_mut().unwrap().start_time = None;
        let mut bad_status = inbound_entry();
        bad_status.response.as_mut().unwrap().response_code = Some(UInt32Value { value: 70_000 });
        let batch =
            http_entries(vec![no_start, HttpAccessLogEntry::default(), bad_status], 5, None, &Attributor::default());
        let reasons: Vec<_> = batch.rejected.iter().map(|r| (r.item, r.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                (5, "common_properties.start_time is missing"),
                (6, "common_properties is missing"),
                (7, "response.response_code 70000 is not an HTTP status")
            ]
        );
    }

    #[test]
    fn tcp_entries_carry_bytes_and_addresses() {
        let entry = TcpAccessLogEntry {
            common_properties: inbound_entry().common_properties,
            connection_properties: Some(envoy_types::pb::envoy::data::accesslog::v3::ConnectionProperties {
                received_bytes: 10,
                sent_bytes: 20,
            }),
        };
        let batch = tcp_entries(vec![entry], 1, None, &Attributor::default());
        let r = &batch.records[0];
        assert_eq!((r.bytes_received, r.bytes_sent, r.method.as_deref()), (Some(10), Some(20), None));
    }
}
