//! The OpenTelemetry Python SDK exporting spans and logs over gRPC and HTTP — the clients most services
//! actually use. The interpreter comes from `MESHLENS_TEST_PYTHON` (default `/tmp/meshlens-venv/bin/python`,
//! created by `.ci/run`); without it the test fails and says how to create it.

use crate::harness::{Collector, INBOUND_LINE};
use serde_json::json;
use std::process::Command;

const SCRIPT: &str = r#"
import logging, sys
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

grpc, http, line = sys.argv[1], sys.argv[2], sys.argv[3]
node = "sidecar~10.244.2.30~sleep-6f8cfb8c8f-kq9zx.default~default.svc.cluster.local"
for name, spans, logs in [
    ("grpc", GrpcSpans(endpoint=grpc, insecure=True), GrpcLogs(endpoint=grpc, insecure=True)),
    ("http", HttpSpans(endpoint=http + "/v1/traces"), HttpLogs(endpoint=http + "/v1/logs")),
]:
    resource = Resource.create({"service.name": "py-" + name, "node_name": node})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    with tracer_provider.get_tracer("meshlens-test").start_as_current_span("GET /" + name) as span:
        span.set_attribute("http.request.method", "GET")
    tracer_provider.shutdown()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    logger = logging.getLogger("access-" + name)
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=logger_provider))
    logger.warning(line)
    logger_provider.shutdown()
"#;

#[test]
fn the_opentelemetry_python_sdk_exports_spans_and_logs_over_grpc_and_http() {
    let python = std::env::var("MESHLENS_TEST_PYTHON").unwrap_or_else(|_| "/tmp/meshlens-venv/bin/python".into());
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python interpreter at {python} (set MESHLENS_TEST_PYTHON). Create it with:\n  \
         python3 -m venv /tmp/meshlens-venv && /tmp/meshlens-venv/bin/pip install opentelemetry-sdk \
         opentelemetry-exporter-otlp"
    );
    let mut collector = Collector::start();
    let out = Command::new(&python)
        .args(["-c", SCRIPT, &collector.grpc_url(), &format!("http://{}", collector.http), INBOUND_LINE])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    collector.stop();
    let spans = collector.query("SELECT service_name, name, http_method, kind FROM spans ORDER BY service_name");
    assert_eq!(
        spans,
        [
            json!({"service_name": "py-grpc", "name": "GET /grpc", "http_method": "GET", "kind": "internal"}),
            json!({"service_name": "py-http", "name": "GET /http", "http_method": "GET", "kind": "internal"}),
        ]
    );
    let requests = collector.query("SELECT source_format, destination_workload, mtls FROM requests");
    let expected = json!({"source_format": "otlp_log", "destination_workload": "sleep", "mtls": "mutual"});
    assert_eq!(requests, [expected.clone(), expected]);
}
