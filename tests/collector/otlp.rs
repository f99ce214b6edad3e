//! OTLP over HTTP (the specification's JSON examples, protobuf, gzip) and over gRPC (a tonic client).

use crate::harness::{Collector, INBOUND_LINE, fixture, gzip, post, runtime};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;
use tonic::codec::CompressionEncoding;

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

pub fn span(id: u8) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![id; 8],
        name: format!("span {id}"),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        attributes: vec![kv("http.request.method", "GET")],
        ..Default::default()
    }
}

pub fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

pub fn access_logs(node: &str, bodies: &[&str]) -> ExportLogsServiceRequest {
    let log_records = bodies
        .iter()
        .map(|b| LogRecord {
            body: Some(AnyValue { value: Some(Value::StringValue((*b).into())) }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: vec![kv("node_name", node)], ..Default::default() }),
            scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

#[test]
fn the_specification_json_examples_are_accepted_over_http() {
    let collector = Collector::start();
    let trace = std::fs::read(fixture("otlp/trace.json")).unwrap();
    let response = post(collector.http, "/v1/traces", "application/json", &trace);
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(response.json()["partialSuccess"].is_null(), "{}", response.json());

    // The example log record is application logging, not an access log: rejected, and said so.
    let logs = std::fs::read(fixture("otlp/logs.json")).unwrap();
    let response = post(collector.http, "/v1/logs", "application/json; charset=utf-8", &logs);
    assert_eq!(response.status, 200);
    let partial = &response.json()["partialSuccess"];
    assert_eq!(partial["rejectedLogRecords"], json!(1), "{partial}");
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("1 log record rejected: log record 1: body is not an access-log line"), "{message}");

    let rows = collector.query("SELECT trace_id, span_id, parent_span_id, name, kind, service_name FROM spans");
    assert_eq!(
        rows,
        [json!({
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "parent_span_id": "eee19b7ec3c1b173",
            "name": "I'm a server span",
            "kind": "server",
            "service_name": "my.service",
        })]
    );
}

#[test]
fn protobuf_and_gzip_are_accepted_over_http_and_answered_in_kind() {
    let collector = Collector::start();
    let body = traces("checkout", vec![span(1), span(2)]).encode_to_vec();
    let response = crate::harness::http(
        "POST",
        collector.http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")],
        &gzip(&body),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/x-protobuf"));
    let answer = ExportTraceServiceResponse::decode(response.body.as_slice()).unwrap();
    assert_eq!(answer.partial_success, None);

    let node = "sidecar~10.244.1.27~httpbin-7c9d8f6b5c-q2w4x.default~default.svc.cluster.local";
    let logs = access_logs(node, &[INBOUND_LINE]).encode_to_vec();
    let response = post(collector.http, "/v1/logs", "application/x-protobuf", &logs);
    assert_eq!(response.status, 200);

    assert_eq!(collector.query("SELECT count(*) AS n FROM spans WHERE service_name = 'checkout'"), [json!({"n": 2})]);
    let rows = collector.query("SELECT source_format, destination_workload, mtls FROM requests");
    assert_eq!(rows, [json!({"source_format": "otlp_log", "destination_workload": "httpbin", "mtls": "mutual"})]);
}

#[test]
fn a_tonic_client_exports_traces_and_logs_over_grpc() {
    let mut collector = Collector::start();
    runtime().block_on(async {
        let mut traces_client =
            TraceServiceClient::connect(collector.grpc_url()).await.unwrap().send_compressed(CompressionEncoding::Gzip);
        let bad = Span { span_id: vec![0; 8], ..span(3) };
        let answer = traces_client.export(traces("cart", vec![span(1), span(2), bad])).await.unwrap().into_inner();
        let partial = answer.partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 1);
        assert_eq!(
            partial.error_message,
            "1 span rejected: span 3: span_id must be 8 bytes and not all zero, found 8 bytes"
        );

        let mut logs_client = LogsServiceClient::connect(collector.grpc_url()).await.unwrap();
        let node = "sidecar~10.244.2.30~sleep-6f8cfb8c8f-kq9zx.default~default.svc.cluster.local";
        let outbound = INBOUND_LINE.replace("inbound|8080||", "outbound|8000||httpbin.default.svc.cluster.local");
        let answer = logs_client.export(access_logs(node, &[&outbound])).await.unwrap().into_inner();
        assert_eq!(answer.partial_success, None);

        // Over the 4 MiB message limit: RESOURCE_EXHAUSTED, as the OTLP specification asks.
        let huge = Span { attributes: vec![kv("blob", &"x".repeat(5 << 20))], ..span(4) };
        let status = traces_client.export(traces("cart", vec![huge])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    });
    collector.stop();
    assert_eq!(collector.query("SELECT count(*) AS n FROM spans WHERE service_name = 'cart'"), [json!({"n": 2})]);
    let rows = collector.query("SELECT source_workload, source_namespace, reporter, destination_service FROM requests");
    assert_eq!(
        rows,
        [json!({
            "source_workload": "sleep",
            "source_namespace": "default",
            "reporter": "source",
            "destination_service": "httpbin.default.svc.cluster.local",
        })]
    );
}

/// The gRPC server advertises a receive window as large as a message, so an exporter sends a whole batch
/// without stopping at the default window (1 MiB in hyper) to wait a round trip for a window update.
#[test]
fn the_grpc_server_lets_an_exporter_send_a_whole_batch_at_once() {
    let collector = Collector::start();
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(collector.grpc).await.unwrap();
        let (client, connection) =
            h2::client::Builder::new().max_send_buffer_size(8 << 20).handshake::<_, bytes::Bytes>(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::post(format!(
            "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            collector.grpc
        ))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
        let (_response, mut body) = client.send_request(request, false).unwrap();
        let wanted = 2 << 20;
        body.reserve_capacity(wanted);
        // Capacity grows as the server's SETTINGS and WINDOW_UPDATE frames arrive; with the default window
        // it would stop at 1 MiB and this would time out.
        let granted = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let capacity = futures::future::poll_fn(|cx| body.poll_capacity(cx)).await.unwrap().unwrap();
                if capacity >= wanted {
                    return capacity;
                }
            }
        })
        .await;
        assert!(granted.is_ok(), "the server's window never reached {wanted} bytes");
    });
}
