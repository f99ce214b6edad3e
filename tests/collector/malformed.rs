//! Malformed input for each receiver: the collector answers with the right status, stores what was
//! good, and keeps serving.

use crate::harness::{Collector, INBOUND_LINE, gzip, http, post, runtime};
use crate::otlp::{span, traces};
use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsMessage;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_client::AccessLogServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

#[test]
fn otlp_http_rejects_undecodable_oversized_and_unknown_bodies() {
    let collector = Collector::start();
    let good = traces("svc", vec![span(1)]).encode_to_vec();

    let truncated = post(collector.http, "/v1/traces", "application/x-protobuf", &good[..good.len() - 3]);
    assert_eq!(truncated.status, 400);

    // `kind` must be an integer, `spans` an array.
    let wrong_types = br#"{"resourceSpans":[{"scopeSpans":[{"spans":{"name":1}}]}]}"#;
    let response = post(collector.http, "/v1/traces", "application/json", wrong_types);
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["code"], json!(3), "INVALID_ARGUMENT");
    assert!(response.json()["message"].as_str().unwrap().starts_with("invalid OTLP JSON"), "{}", response.json());

    let invalid_utf8 = b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"\xff\"}]}}]}";
    assert_eq!(post(collector.http, "/v1/traces", "application/json", invalid_utf8).status, 400);

    // 32 MiB of zeros gzip to 32 KiB: refused after decompression.
    let bomb = gzip(&vec![0; 32 << 20]);
    assert!(bomb.len() < 64 << 10);
    let headers = [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")];
    assert_eq!(http("POST", collector.http, "/v1/traces", &headers, &bomb).status, 413);
    assert_eq!(http("POST", collector.http, "/v1/logs", &headers, b"not gzip").status, 400);

    assert_eq!(post(collector.http, "/v1/traces", "text/plain", &good).status, 415);
    let headers = [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "br")];
    assert_eq!(http("POST", collector.http, "/v1/traces", &headers, &good).status, 415);

    // A huge span name is rejected alone; its neighbour is stored.
    let huge = Span { name: "n".repeat(100 << 10), ..span(2) };
    let response = post(
        collector.http,
        "/v1/traces",
        "application/json",
        &serde_json::to_vec(&traces("svc", vec![span(1), huge])).unwrap(),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["partialSuccess"]["rejectedSpans"], json!(1));

    let metrics = String::from_utf8(http("GET", collector.api, "/metrics", &[], b"").body).unwrap();
    assert!(metrics.contains("meshlens_collector_invalid_requests_total{receiver=\"otlp_http\"} 7"), "{metrics}");
    assert!(
        metrics.contains("meshlens_collector_rejected_records_total{receiver=\"otlp_http\",format=\"otlp_spans\"} 1")
    );
    assert_eq!(collector.query("SELECT count(*) AS n FROM spans"), [json!({"n": 1})]);
}

#[test]
fn accesslog_http_stores_good_lines_and_reports_bad_ones_by_number() {
    let collector = Collector::start();
    let mut body = format!("{INBOUND_LINE}\n\nnot a log line\n{{\"start_time\": 12}}\n").into_bytes();
    body.extend_from_slice(b"[2025-06-01T15:37:04.814Z] \"GET /\xff HTTP/1.1\" 200\n");
    body.extend_from_slice(format!("{}\n", "x".repeat(70_000)).as_bytes());
    body.extend_from_slice(INBOUND_LINE.as_bytes());
    let headers = [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")];
    let response = http("POST", collector.http, "/v1/accesslogs?workload=default/httpbin", &headers, &gzip(&body));
    assert_eq!(response.status, 200);
    let answer = response.json();
    assert_eq!(
        (answer["received"].clone(), answer["stored"].clone(), answer["rejected"].clone()),
        (json!(6), json!(2), json!(4))
    );
    let errors = answer["errors"].as_array().unwrap();
    let lines: Vec<_> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [3, 4, 5, 6]);
    assert!(errors[2]["reason"].as_str().unwrap().contains("not valid UTF-8"), "{errors:?}");
    assert!(errors[3]["reason"].as_str().unwrap().contains("limit is 65536 bytes"), "{errors:?}");

    let bad_param = post(collector.http, "/v1/accesslogs?workload=httpbin", "text/plain", INBOUND_LINE.as_bytes());
    assert_eq!(bad_param.status, 400);
    let bomb = gzip(&vec![b'\n'; 32 << 20]);
    let headers = [("Content-Encoding", "gzip")];
    assert_eq!(http("POST", collector.http, "/v1/accesslogs", &headers, &bomb).status, 413);

    let rows = collector.query("SELECT destination_workload, mtls FROM requests WHERE source_format = 'istio_text'");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| *r == json!({"destination_workload": "httpbin", "mtls": "mutual"})), "{rows:?}");
}

#[test]
fn als_rejects_a_truncated_message_with_invalid_argument() {
    let collector = Collector::start();
    runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(collector.grpc_url()).unwrap().connect().await.unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        // A raw client stream whose one message is a protobuf cut in the middle of a length-delimited field.
        let path =
            http::uri::PathAndQuery::from_static("/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs");
        let raw: Vec<u8> = vec![0x0a, 0x20, 0x0a];
        let stream = futures::stream::iter(vec![raw]);
        let result = client.client_streaming::<_, Vec<u8>, (), _>(tonic::Request::new(stream), path, RawCodec).await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

        // The server still serves well-formed streams.
        let mut als = AccessLogServiceClient::connect(collector.grpc_url()).await.unwrap();
        als.stream_access_logs(futures::stream::iter(vec![StreamAccessLogsMessage::default()])).await.unwrap();
    });
}

/// Sends bytes as they are and decodes an empty reply, so that a test can put any bytes on the wire.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, _: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        Ok(Some(()))
    }
}
