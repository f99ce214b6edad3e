//! OTLP/gRPC: `TraceService/Export` and `LogsService/Export`. Size limits, gzip and status-code fixes are
//! set where the services are mounted ([`crate::server`]).

use super::convert;
use crate::formats::LineParser;
use crate::internal_events::{Format, Receiver};
use crate::sources::SourceContext;
use crate::sources::grpc_status::unavailable;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::time::Instant;
use tonic::{Request, Response, Status};

/// `opentelemetry.proto.collector.trace.v1.TraceService`.
#[derive(Debug, Clone)]
pub struct TraceReceiver(pub SourceContext);

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let started = Instant::now();
        let batch = convert::spans(request.into_inner());
        let outcome = self.0.ingest.spans(Receiver::OtlpGrpc, started, batch).await.map_err(|e| unavailable(&e))?;
        let partial_success = outcome
            .message
            .map(|error_message| ExportTracePartialSuccess { rejected_spans: outcome.rejected as i64, error_message });
        Ok(Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

/// `opentelemetry.proto.collector.logs.v1.LogsService`.
#[derive(Debug, Clone)]
pub struct LogsReceiver(pub SourceContext);

#[tonic::async_trait]
impl LogsService for LogsReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let started = Instant::now();
        let batch = convert::requests(request.into_inner(), LineParser::default(), &self.0.attributor.current());
        let outcome = self
            .0
            .ingest
            .requests(Receiver::OtlpGrpc, Format::OtlpLogs, "log record", started, batch)
            .await
            .map_err(|e| unavailable(&e))?;
        let partial_success = outcome.message.map(|error_message| ExportLogsPartialSuccess {
            rejected_log_records: outcome.rejected as i64,
            error_message,
        });
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}
