//! The benchmark's input: Istio TEXT access-log lines and OTLP span exports as an Istio mesh produces them,
//! derived from the store's synthetic request stream (`meshlens_store::synth`), so every path ingests the
//! same traffic. Each synthetic request is logged twice, by the client's sidecar (outbound) and by the
//! server's (inbound), and traced twice, as Envoy's client and server spans.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use meshlens_model::{Mtls, RequestRecord};
use meshlens_store::synth::RequestGenerator;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind};
use prost::Message;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Requests per second of simulated traffic: sets how far apart the timestamps are (nothing sleeps).
const TRAFFIC_RATE: u32 = 100_000;

fn generator(seed: u64) -> RequestGenerator {
    // A minute ago, so that the records land in the current hour partitions like live traffic.
    let start: DateTime<Utc> = Utc::now() - chrono::Duration::minutes(1);
    RequestGenerator::new(seed, start, TRAFFIC_RATE)
}

/// `lines` Istio TEXT lines (the 1.9+ default format), in bodies of `per_body` lines each.
pub fn access_log_bodies(lines: usize, per_body: usize) -> Vec<Bytes> {
    let mut requests = generator(11);
    let mut bodies = Vec::with_capacity(lines.div_ceil(per_body));
    let mut body = String::new();
    let mut in_body = 0;
    let mut pending_inbound: Option<RequestRecord> = None;
    for _ in 0..lines {
        // Outbound line first, then the same request as the server's sidecar logs it.
        match pending_inbound.take() {
            Some(record) => inbound_line(&mut body, &record),
            None => {
                let record = requests.next().unwrap_or_default();
                outbound_line(&mut body, &record);
                pending_inbound = Some(record);
            }
        }
        body.push('\n');
        in_body += 1;
        if in_body == per_body {
            bodies.push(Bytes::from(std::mem::take(&mut body)));
            in_body = 0;
        }
    }
    if in_body > 0 {
        bodies.push(Bytes::from(body));
    }
    bodies
}

fn dash(value: Option<&str>) -> &str {
    value.filter(|v| !v.is_empty()).unwrap_or("-")
}

fn number(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The synthetic 32-hex request id in the UUID form Envoy generates.
fn uuid(hex: Option<&str>) -> String {
    match hex {
        Some(h) if h.len() == 32 => format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]),
        other => dash(other).to_owned(),
    }
}

fn host_of(address: Option<&str>) -> &str {
    address.and_then(|a| a.rsplit_once(':')).map_or("-", |(host, _)| host)
}

/// Istio's default TEXT format up to `%UPSTREAM_HOST%`, common to both sidecars' lines.
fn envoy_fields(out: &mut String, r: &RequestRecord, duration: Option<u64>) {
    let flags = if r.response_flags.is_empty() { "-".to_owned() } else { r.response_flags.join(",") };
    let _ = write!(
        out,
        "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} {} \"-\" \"{}\" \"{}\" \"{}\" \"{}\"",
        r.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        dash(r.method.as_deref()),
        dash(r.path.as_deref()),
        dash(r.protocol.as_deref()),
        r.status.unwrap_or(0),
        flags,
        dash(r.response_code_details.as_deref()),
        r.bytes_received.unwrap_or(0),
        r.bytes_sent.unwrap_or(0),
        number(duration),
        number(r.upstream_service_time_ms.map(|t| t.min(duration.unwrap_or(0)))),
        dash(r.user_agent.as_deref()),
        uuid(r.request_id.as_deref()),
        dash(r.authority.as_deref()),
        dash(r.upstream_host.as_deref()),
    );
}

/// The client sidecar's line: `outbound|PORT|SUBSET|FQDN`, the Service VIP as the downstream local address,
/// no SNI (the app sent plaintext to its sidecar).
fn outbound_line(out: &mut String, r: &RequestRecord) {
    envoy_fields(out, r, r.duration_ms);
    let client_ip = host_of(r.downstream_remote_address.as_deref());
    let ephemeral = 30_000 + r.bytes_sent.unwrap_or(0) % 30_000;
    let cluster = r.upstream_cluster.as_deref().map(|c| c.replacen("||", "|v1|", 1));
    let _ = write!(
        out,
        " {} {client_ip}:{ephemeral} {} {} - {}",
        dash(cluster.as_deref()),
        dash(r.downstream_local_address.as_deref()),
        dash(r.downstream_remote_address.as_deref()),
        dash(r.route_name.as_deref()),
    );
}

/// The server sidecar's line: `inbound|PORT||`, Istio's mTLS SNI unless the request was plaintext, the
/// client pod as the downstream remote address. Its duration excludes the network hop.
fn inbound_line(out: &mut String, r: &RequestRecord) {
    envoy_fields(out, r, r.duration_ms.map(|d| d.saturating_sub(1)));
    let port = r.destination_port.unwrap_or(80);
    let sni = match (r.mtls, r.destination_service.as_deref()) {
        (Mtls::Plaintext, _) | (_, None) => "-".to_owned(),
        (_, Some(fqdn)) => format!("outbound_.{port}_.{}_.{fqdn}", dash(r.destination_subset.as_deref())),
    };
    let _ = write!(
        out,
        " inbound|{port}|| 127.0.0.6:{} {} {} {sni} default",
        40_000 + r.bytes_sent.unwrap_or(0) % 20_000,
        dash(r.upstream_host.as_deref()),
        dash(r.downstream_remote_address.as_deref()),
    );
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn short(service: &str) -> &str {
    service.split('.').next().unwrap_or(service)
}

/// `spans` spans as Envoy's OpenTelemetry tracer in an Istio sidecar emits them (its tags, `service.name`
/// = `CANONICAL_SERVICE.NAMESPACE`), in export requests of `per_export` spans grouped by resource, the way an
/// OpenTelemetry Collector's batch processor forwards them. Returned protobuf-encoded.
pub fn span_exports(spans: usize, per_export: usize) -> Vec<Bytes> {
    let mut requests = generator(13);
    let mut exports = Vec::with_capacity(spans.div_ceil(per_export));
    let mut left = spans;
    while left > 0 {
        let n = left.min(per_export);
        let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
        let mut made = 0;
        while made < n {
            let record = requests.next().unwrap_or_default();
            let (client, server) = client_and_server_spans(&record);
            let source = format!("{}.{}", dash(record.source_workload.as_deref()), "default");
            let destination = format!(
                "{}.{}",
                short(dash(record.destination_service.as_deref())),
                dash(record.destination_namespace.as_deref())
            );
            by_service.entry(source).or_default().push(client);
            made += 1;
            if made < n {
                by_service.entry(destination).or_default().push(server);
                made += 1;
            }
        }
        let resource_spans = by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", service)],
                    dropped_attributes_count: 0,
                    entity_refs: Vec::new(),
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "envoy".into(), ..Default::default() }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect();
        exports.push(Bytes::from(ExportTraceServiceRequest { resource_spans }.encode_to_vec()));
        left -= n;
    }
    exports
}

fn hex_bytes(hex: Option<&str>, len: usize) -> Vec<u8> {
    let hex = hex.unwrap_or_default();
    (0..len).map(|i| hex.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()).unwrap_or(1)).collect()
}

/// The client sidecar's span and the server sidecar's child span of one request.
fn client_and_server_spans(r: &RequestRecord) -> (Span, Span) {
    let start = r.timestamp.timestamp_nanos_opt().unwrap_or_default() as u64;
    let duration_ns = r.duration_ms.unwrap_or(0) * 1_000_000;
    let trace_id = hex_bytes(r.trace_id.as_deref(), 16);
    let client_id = hex_bytes(r.span_id.as_deref(), 8);
    let mut server_id = client_id.clone();
    server_id[0] ^= 0xff;
    let fqdn = dash(r.destination_service.as_deref());
    let port = r.destination_port.unwrap_or(80);
    let status = r.status.unwrap_or(0);
    let flags = if r.response_flags.is_empty() { "-".to_owned() } else { r.response_flags.join(",") };
    let tags = |side: &str, canonical: &str| {
        vec![
            kv(
                "node_id",
                format!(
                    "sidecar~{}~{canonical}-v1-6d8f7c9b5-x2x4z.default~default.svc.cluster.local",
                    host_of(r.upstream_host.as_deref())
                ),
            ),
            kv("zone", ""),
            kv("guid:x-request-id", uuid(r.request_id.as_deref())),
            kv("http.url", format!("http://{}{}", dash(r.authority.as_deref()), dash(r.path.as_deref()))),
            kv("http.method", dash(r.method.as_deref())),
            kv("downstream_cluster", "-"),
            kv("user_agent", dash(r.user_agent.as_deref())),
            kv("http.protocol", dash(r.protocol.as_deref())),
            kv("peer.address", host_of(r.downstream_remote_address.as_deref())),
            kv("request_size", r.bytes_received.unwrap_or(0).to_string()),
            kv("response_size", r.bytes_sent.unwrap_or(0).to_string()),
            kv("component", "proxy"),
            kv(
                "upstream_cluster",
                if side == "client" { format!("outbound|{port}|v1|{fqdn}") } else { format!("inbound|{port}||") },
            ),
            kv(
                "upstream_cluster.name",
                if side == "client" { format!("outbound|{port}|v1|{fqdn}") } else { format!("inbound|{port}||") },
            ),
            kv("http.status_code", status.to_string()),
            kv("response_flags", flags.clone()),
            kv("istio.canonical_revision", "v1"),
            kv("istio.canonical_service", canonical),
            kv("istio.mesh_id", "cluster.local"),
            kv("istio.namespace", "default"),
        ]
    };
    let error = status >= 500;
    let span = |span_id: Vec<u8>, parent: Vec<u8>, kind: SpanKind, attributes: Vec<KeyValue>, shrink: u64| Span {
        trace_id: trace_id.clone(),
        span_id,
        parent_span_id: parent,
        name: format!("{fqdn}:{port}/*"),
        kind: kind as i32,
        start_time_unix_nano: start + shrink / 2,
        end_time_unix_nano: start + duration_ns.saturating_sub(shrink / 2).max(shrink / 2),
        attributes,
        status: Some(Status { code: if error { 2 } else { 0 }, message: String::new() }),
        ..Default::default()
    };
    let client =
        span(client_id.clone(), Vec::new(), SpanKind::Client, tags("client", dash(r.source_workload.as_deref())), 0);
    let server = span(server_id, client_id, SpanKind::Server, tags("server", short(fqdn)), 1_000_000);
    (client, server)
}
