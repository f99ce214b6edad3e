//! OTLP messages to model records: `ResourceSpans` to [`SpanRecord`]s, and the log records of Envoy's
//! OpenTelemetry access logger (Istio's `envoyOtelAls`) to [`RequestRecord`]s.

use crate::attribution::{Attributor, ProxyIdentity};
use crate::formats::LineParser;
use crate::sources::{Batch, Rejection};
use chrono::{DateTime, Utc};
use meshlens_model::{RequestRecord, SourceFormat, SpanKind, SpanRecord, SpanStatus};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The longest string kept in one field or attribute. It matches the access-log line limit: no real span
/// name or attribute comes close, so a longer one is an error or an attack, and rejecting the span keeps
/// one item from bloating the store.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Nesting depth up to which array and map attribute values are rendered; deeper levels become `…`.
const MAX_VALUE_DEPTH: usize = 8;

/// Converts every span of an export request. Resource attributes apply to all spans of their resource;
/// span attributes win over resource attributes of the same key.
pub fn spans(request: ExportTraceServiceRequest) -> Batch<SpanRecord> {
    let mut batch = Batch::default();
    let mut item = 0;
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.unwrap_or_default();
            for span in scope_spans.spans {
                item += 1;
                match span_record(&resource, &scope.name, &scope.version, span) {
                    Ok(record) => batch.records.push(record),
                    Err(reason) => batch.rejected.push(Rejection { item, reason }),
                }
            }
        }
    }
    batch
}

fn span_record(resource: &Resource, scope_name: &str, scope_version: &str, span: Span) -> Result<SpanRecord, String> {
    let trace_id = id_hex("trace_id", &span.trace_id, 16)?.ok_or("trace_id is missing")?;
    let span_id = id_hex("span_id", &span.span_id, 8)?.ok_or("span_id is missing")?;
    let parent_span_id = id_hex("parent_span_id", &span.parent_span_id, 8)?;
    let start_time = time("start_time_unix_nano", span.start_time_unix_nano)?;
    let end_time = time("end_time_unix_nano", span.end_time_unix_nano)?;
    if end_time < start_time {
        return Err(format!("end_time_unix_nano ({end_time}) is before start_time_unix_nano ({start_time})"));
    }
    check_len("name", &span.name)?;
    let status = span.status.unwrap_or_default();
    check_len("status.message", &status.message)?;

    let mut attributes = BTreeMap::new();
    for kv in resource.attributes.iter().chain(&span.attributes) {
        let value = render(kv.value.as_ref(), 0);
        check_len(&kv.key, &value)?;
        attributes.insert(kv.key.clone(), value);
    }
    if !scope_name.is_empty() {
        attributes.insert("otel.scope.name".into(), scope_name.to_owned());
    }
    if !scope_version.is_empty() {
        attributes.insert("otel.scope.version".into(), scope_version.to_owned());
    }
    let mut lift = |keys: &[&str]| {
        let value = keys.iter().find_map(|k| attributes.get(*k).cloned());
        for key in keys {
            attributes.remove(*key);
        }
        value.filter(|v| !v.is_empty())
    };
    let http_method = lift(&["http.request.method", "http.method"]);
    let http_status_code = lift(&["http.response.status_code", "http.status_code"]).and_then(|c| c.parse().ok());
    let http_url = lift(&["url.full", "http.url", "url.path"]);
    let http_route = lift(&["http.route"]);
    let peer_service = lift(&["server.address", "net.peer.name", "peer.service"]);
    let upstream_cluster = lift(&["upstream_cluster"]);
    let request_id =
        lift(&["guid:x-request-id"]).or_else(|| first_of_array(&span.attributes, "http.request.header.x-request-id"));
    attributes.remove("http.request.header.x-request-id");
    let service_name = string_attr(&resource.attributes, "service.name");
    attributes.remove("service.name");
    let service_namespace = string_attr(&resource.attributes, "service.namespace")
        .or_else(|| string_attr(&resource.attributes, "k8s.namespace.name"));
    Ok(SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        name: span.name,
        kind: SpanKind::from_otlp(span.kind),
        duration_ms: (end_time - start_time).num_microseconds().map_or(f64::MAX, |us| us as f64 / 1000.0),
        start_time,
        end_time,
        status_code: SpanStatus::from_otlp(status.code),
        status_message: non_empty(status.message),
        service_name,
        service_namespace,
        http_method,
        http_status_code,
        http_url,
        http_route,
        peer_service,
        upstream_cluster,
        request_id,
        attributes,
    })
}

/// Converts the log records of an export request that are access-log entries. Envoy's OpenTelemetry
/// access logger puts the formatted line in the body (a string; a map body is read like an Istio JSON
/// entry); any other log record is rejected with the reason the line parser gave.
pub fn requests(
    request: ExportLogsServiceRequest,
    parser: LineParser,
    attributor: &Attributor,
) -> Batch<RequestRecord> {
    let mut batch = Batch::default();
    let mut item = 0;
    for resource_logs in request.resource_logs {
        let resource = resource_logs.resource.unwrap_or_default();
        let proxy = ProxyIdentity::from_resource(|key| str_attr(&resource.attributes, key));
        for scope_logs in resource_logs.scope_logs {
            for log in scope_logs.log_records {
                item += 1;
                match log_request(log, parser) {
                    Ok(mut record) => {
                        attributor.attribute(&mut record, proxy.as_ref());
                        batch.records.push(record);
                    }
                    Err(reason) => batch.rejected.push(Rejection { item, reason }),
                }
            }
        }
    }
    batch
}

fn log_request(log: LogRecord, parser: LineParser) -> Result<RequestRecord, String> {
    let line = match log.body.and_then(|b| b.value) {
        Some(Value::StringValue(line)) => line,
        Some(Value::KvlistValue(map)) => {
            let object: serde_json::Map<String, serde_json::Value> =
                map.values.iter().map(|kv| (kv.key.clone(), json_value(kv.value.as_ref(), 0))).collect();
            serde_json::Value::Object(object).to_string()
        }
        Some(other) => return Err(format!("body is a {}, not an access-log line", value_kind(&other))),
        None => return Err("body is empty, not an access-log line".into()),
    };
    let mut record = parser.parse(&line).map_err(|e| format!("body is not an access-log line: {e}"))?;
    record.source_format = SourceFormat::OtlpLog;
    if record.trace_id.is_none() {
        record.trace_id = id_hex("trace_id", &log.trace_id, 16)?;
    }
    if record.span_id.is_none() {
        record.span_id = id_hex("span_id", &log.span_id, 8)?;
    }
    Ok(record)
}

/// An id as lowercase hex; `None` when empty. All-zero ids are invalid in OTLP, as are other lengths.
fn id_hex(field: &str, bytes: &[u8], len: usize) -> Result<Option<String>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() != len || bytes.iter().all(|&b| b == 0) {
        return Err(format!("{field} must be {len} bytes and not all zero, found {} bytes", bytes.len()));
    }
    Ok(Some(hex(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn time(field: &str, nanos: u64) -> Result<DateTime<Utc>, String> {
    if nanos == 0 {
        return Err(format!("{field} is missing"));
    }
    // Every u64 of nanoseconds fits chrono's range (until the year 2554).
    Ok(DateTime::from_timestamp_nanos(i64::try_from(nanos).map_err(|_| format!("{field} is out of range"))?))
}

fn check_len(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("{field} is {} bytes long; the limit is {MAX_VALUE_BYTES} bytes", value.len()));
    }
    Ok(())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn str_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| render(kv.value.as_ref(), 0)).filter(|s| !s.is_empty())
}

/// Semantic-convention request headers are string arrays; the first value is the header.
fn first_of_array(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    match value {
        Value::ArrayValue(array) => array.values.first().map(|v| render(Some(v), 0)),
        other => Some(render_value(other, 0)),
    }
}

/// An attribute value as a string: scalars as written, bytes as hex, arrays and maps as JSON.
fn render(value: Option<&AnyValue>, depth: usize) -> String {
    value.and_then(|v| v.value.as_ref()).map_or_else(String::new, |v| render_value(v, depth))
}

fn render_value(value: &Value, depth: usize) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => hex(b),
        // An index into a profiles string table; meaningless outside a profile, kept as the number.
        Value::StringValueStrindex(i) => i.to_string(),
        Value::ArrayValue(_) | Value::KvlistValue(_) => {
            json_value(Some(&AnyValue { value: Some(value.clone()) }), depth).to_string()
        }
    }
}

fn json_value(value: Option<&AnyValue>, depth: usize) -> serde_json::Value {
    use serde_json::Value as J;
    if depth >= MAX_VALUE_DEPTH {
        return J::String("…".into());
    }
    match value.and_then(|v| v.value.as_ref()) {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => J::from(*d),
        Some(Value::BytesValue(b)) => J::String(hex(b)),
        Some(Value::StringValueStrindex(i)) => J::from(*i),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(|v| json_value(Some(v), depth + 1)).collect()),
        Some(Value::KvlistValue(m)) => {
            J::Object(m.values.iter().map(|kv| (kv.key.clone(), json_value(kv.value.as_ref(), depth + 1))).collect())
        }
    }
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::StringValue(_) => "string",
        Value::BoolValue(_) => "bool",
        Value::IntValue(_) => "int",
        Value::DoubleValue(_) => "double",
        Value::BytesValue(_) => "bytes value",
        Value::StringValueStrindex(_) => "string-table index",
        Value::ArrayValue(_) => "array",
        Value::KvlistValue(_) => "map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::{Direction, Mtls};
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn trace_request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: resource, ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn span() -> Span {
        Span {
            trace_id: vec![0x5b; 16],
            span_id: vec![0xee; 8],
            name: "GET /reviews".into(),
            kind: 3,
            start_time_unix_nano: 1_544_712_660_000_000_000,
            end_time_unix_nano: 1_544_712_660_250_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn spans_lift_http_and_peer_attributes_and_keep_the_rest() {
        let span = Span {
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.response.status_code", Value::IntValue(503)),
                kv("url.full", s("http://reviews:9080/reviews/0")),
                kv("server.address", s("reviews")),
                kv("upstream_cluster", s("outbound|9080||reviews.default.svc.cluster.local")),
                kv("guid:x-request-id", s("abc")),
                kv("retries", Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("1")) }] })),
            ],
            status: Some(Status { code: 2, message: "upstream failed".into() }),
            ..span()
        };
        let resource = vec![kv("service.name", s("productpage")), kv("k8s.namespace.name", s("bookinfo"))];
        let batch = spans(trace_request(resource, vec![span]));
        assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
        let r = &batch.records[0];
        assert_eq!(r.trace_id, "5b".repeat(16));
        assert_eq!((r.kind, r.status_code), (SpanKind::Client, SpanStatus::Error));
        assert_eq!(r.duration_ms, 250.0);
        assert_eq!(
            (r.service_name.as_deref(), r.service_namespace.as_deref()),
            (Some("productpage"), Some("bookinfo"))
        );
        assert_eq!((r.http_method.as_deref(), r.http_status_code), (Some("GET"), Some(503)));
        assert_eq!(r.peer_service.as_deref(), Some("reviews"));
        assert_eq!(r.request_id.as_deref(), Some("abc"));
        assert_eq!(r.attributes.get("retries").map(String::as_str), Some(r#"["1"]"#));
        assert_eq!(r.attributes.get("k8s.namespace.name").map(String::as_str), Some("bookinfo"));
        assert!(!r.attributes.contains_key("http.request.method"), "{:?}", r.attributes);
    }

    #[test]
    fn bad_spans_are_rejected_with_a_reason_and_the_rest_kept() {
        let huge = Span { name: "x".repeat(MAX_VALUE_BYTES + 1), ..span() };
        let bad_id = Span { trace_id: vec![1; 3], ..span() };
        let backwards = Span { end_time_unix_nano: 1, ..span() };
        let batch = spans(trace_request(vec![], vec![span(), huge, bad_id, backwards]));
        assert_eq!(batch.records.len(), 1);
        let reasons: Vec<_> = batch.rejected.iter().map(|r| (r.item, r.reason.as_str())).collect();
        assert_eq!(reasons[0], (2, "name is 65537 bytes long; the limit is 65536 bytes"));
        assert_eq!(reasons[1], (3, "trace_id must be 16 bytes and not all zero, found 3 bytes"));
        assert!(reasons[2].1.starts_with("end_time_unix_nano"), "{reasons:?}");
    }

    const LINE: &str = r#"[2025-06-01T15:37:04.814Z] "GET /get HTTP/1.1" 200 - via_upstream - "-" 0 621 94 63 "-" "fortio" "f47fa353" "httpbin:8000" "10.244.1.27:8080" inbound|8080|| 127.0.0.6:42658 10.244.1.27:8080 10.244.2.30:58932 outbound_.8000_._.httpbin.default.svc.cluster.local default"#;

    fn logs_request(resource: Vec<KeyValue>, bodies: Vec<Option<Value>>) -> ExportLogsServiceRequest {
        let log_records = bodies
            .into_iter()
            .map(|body| LogRecord { body: body.map(|v| AnyValue { value: Some(v) }), ..Default::default() })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: resource, ..Default::default() }),
                scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn envoy_access_log_records_become_requests_attributed_to_the_node() {
        let node = "sidecar~10.244.1.27~httpbin-7c9d8f6b5c-q2w4x.default~default.svc.cluster.local";
        let json = KeyValueList {
            values: vec![
                kv("start_time", s("2025-06-01T15:37:04.814Z")),
                kv("method", s("POST")),
                kv("response_code", Value::IntValue(201)),
            ],
        };
        let request = logs_request(
            vec![kv("node_name", s(node))],
            vec![Some(s(LINE)), Some(Value::KvlistValue(json)), Some(s("Example log record")), None],
        );
        let batch = requests(request, LineParser::default(), &Attributor::default());
        assert_eq!(batch.records.len(), 2, "{:?}", batch.rejected);
        let r = &batch.records[0];
        assert_eq!((r.source_format, r.direction, r.mtls), (SourceFormat::OtlpLog, Direction::Inbound, Mtls::Mutual));
        assert_eq!(r.destination_workload.as_deref(), Some("httpbin"));
        assert_eq!((batch.records[1].method.as_deref(), batch.records[1].status), (Some("POST"), Some(201)));
        assert_eq!(batch.rejected[0].item, 3);
        assert!(batch.rejected[0].reason.starts_with("body is not an access-log line: cannot detect the format"));
        assert_eq!(batch.rejected[1].reason, "body is empty, not an access-log line");
    }
}
