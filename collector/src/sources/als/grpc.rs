//! The ALS receiver. Envoy keeps one stream open per proxy and never reads a per-message reply (the
//! response comes only when the stream ends), so each message is stored before the next is read: the
//! stream's back-pressure is the store's. When the store refuses a message the stream ends with
//! `UNAVAILABLE` and Envoy reconnects; messages before it are stored, the refused one is lost (ALS has no
//! acknowledgements to retry on — Envoy documents the service as lossy).

use super::convert;
use crate::attribution::ProxyIdentity;
use crate::internal_events::{Format, Receiver, RequestInvalid};
use crate::sources::SourceContext;
use crate::sources::grpc_status::{stream_error, unavailable};
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogService;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{StreamAccessLogsMessage, StreamAccessLogsResponse};
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

/// `envoy.service.accesslog.v3.AccessLogService`.
#[derive(Debug, Clone)]
pub struct AlsReceiver(pub SourceContext);

#[tonic::async_trait]
impl AccessLogService for AlsReceiver {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let ctx = &self.0;
        let mut stream = request.into_inner();
        let mut proxy: Option<ProxyIdentity> = None;
        let mut next_item = 1;
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    let status = stream_error(status);
                    ctx.ingest
                        .telemetry()
                        .emit(RequestInvalid { receiver: Receiver::EnvoyAls, reason: status.message() });
                    return Err(status);
                }
            };
            let started = Instant::now();
            // Envoy sends the identifier on the first message of a stream only.
            if proxy.is_none()
                && let Some(node) = message.identifier.and_then(|i| i.node)
            {
                proxy = ProxyIdentity::from_node_id(&node.id);
                tracing::debug!(node = node.id, ?proxy, "ALS stream opened");
            }
            let attributor = ctx.attributor.current();
            let (format, batch) = match message.log_entries {
                Some(LogEntries::HttpLogs(logs)) => {
                    (Format::AlsHttp, convert::http_entries(logs.log_entry, next_item, proxy.as_ref(), &attributor))
                }
                Some(LogEntries::TcpLogs(logs)) => {
                    (Format::AlsTcp, convert::tcp_entries(logs.log_entry, next_item, proxy.as_ref(), &attributor))
                }
                None => continue,
            };
            next_item += batch.received() as u64;
            ctx.ingest
                .requests(Receiver::EnvoyAls, format, "entry", started, batch)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}
