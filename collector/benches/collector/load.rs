//! Load generators: several concurrent senders, each on its own connection, that behave like real
//! exporters: one request per batch, and on "busy" (HTTP 503 / gRPC `UNAVAILABLE`) they wait the delay the
//! server asked for (`Retry-After` / `google.rpc.RetryInfo`) and send the same batch again. Bodies are
//! encoded before the clock starts, so that the senders take as little as possible of the CPU the collector
//! under test shares with them.

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Where and how a body is sent.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// `POST /v1/accesslogs`, text lines.
    AccessLogs,
    /// `POST /v1/traces`, `application/x-protobuf`.
    OtlpHttpTraces,
    /// `TraceService/Export` over gRPC.
    OtlpGrpcTraces,
}

/// What the senders saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub elapsed: Duration,
    /// Requests answered with success.
    pub accepted: u64,
    /// Items the server said it stored (access logs) or did not reject (OTLP).
    pub stored: u64,
    /// Busy answers that were retried.
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    stored: AtomicU64,
    retries: AtomicU64,
}

/// Sends every body once (plus retries) to `addr` from `senders` concurrent connections; each body counts
/// `items_per_body(i)` items. Fails on any answer other than success or busy.
pub async fn run(
    target: Target,
    addr: SocketAddr,
    bodies: Arc<Vec<Bytes>>,
    items: Arc<Vec<u64>>,
    senders: usize,
) -> anyhow::Result<LoadReport> {
    let next = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders {
        let (next, counters, bodies, items) = (next.clone(), counters.clone(), bodies.clone(), items.clone());
        tasks.spawn(async move {
            let mut sender = Sender::connect(target, addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return anyhow::Ok(()) };
                loop {
                    match sender.send(body.clone()).await? {
                        Answer::Stored(stored) => {
                            let stored = stored.unwrap_or(items[i]);
                            anyhow::ensure!(stored == items[i], "body {i}: {stored} of {} items stored", items[i]);
                            counters.accepted.fetch_add(1, Ordering::Relaxed);
                            counters.stored.fetch_add(stored, Ordering::Relaxed);
                            break;
                        }
                        Answer::Busy(delay) => {
                            counters.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(LoadReport {
        elapsed: started.elapsed(),
        accepted: counters.accepted.load(Ordering::Relaxed),
        stored: counters.stored.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
    })
}

enum Answer {
    /// Success, with the stored count when the answer carries one.
    Stored(Option<u64>),
    /// Busy: retry after this long.
    Busy(Duration),
}

enum Sender {
    Http { target: Target, authority: String, conn: http1::SendRequest<Full<Bytes>> },
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
}

impl Sender {
    async fn connect(target: Target, addr: SocketAddr) -> anyhow::Result<Sender> {
        if let Target::OtlpGrpcTraces = target {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
            return Ok(Sender::Grpc(tonic::client::Grpc::new(channel)));
        }
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (conn, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Sender::Http { target, authority: addr.to_string(), conn })
    }

    async fn send(&mut self, body: Bytes) -> anyhow::Result<Answer> {
        match self {
            Sender::Http { target, authority, conn } => {
                let (path, content_type) = match target {
                    Target::AccessLogs => ("/v1/accesslogs", "text/plain"),
                    _ => ("/v1/traces", "application/x-protobuf"),
                };
                let request = http::Request::post(path)
                    .header(http::header::HOST, authority.as_str())
                    .header(http::header::CONTENT_TYPE, content_type)
                    .body(Full::new(body))?;
                conn.ready().await?;
                let response = conn.send_request(request).await?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = response.into_body().collect().await?.to_bytes();
                if status == http::StatusCode::SERVICE_UNAVAILABLE {
                    return Ok(Answer::Busy(retry_after.unwrap_or(Duration::from_secs(1))));
                }
                anyhow::ensure!(status.is_success(), "{path}: {status}: {}", String::from_utf8_lossy(&body));
                match target {
                    Target::AccessLogs => {
                        let answer: serde_json::Value = serde_json::from_slice(&body)?;
                        Ok(Answer::Stored(answer["stored"].as_u64()))
                    }
                    _ => {
                        let answer = ExportTraceServiceResponse::decode(body)?;
                        anyhow::ensure!(answer.partial_success.is_none(), "partial success: {answer:?}");
                        Ok(Answer::Stored(None))
                    }
                }
            }
            Sender::Grpc(grpc) => {
                grpc.ready().await?;
                let path =
                    http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
                match grpc.unary(tonic::Request::new(body), path, PreEncoded).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        anyhow::ensure!(answer.partial_success.is_none(), "partial success: {answer:?}");
                        Ok(Answer::Stored(None))
                    }
                    Err(status) if status.code() == tonic::Code::Unavailable => Ok(Answer::Busy(retry_delay(&status))),
                    Err(status) => anyhow::bail!("TraceService/Export: {status}"),
                }
            }
        }
    }
}

/// `google.rpc.RetryInfo`, as the collector sends it in `UNAVAILABLE`'s details.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<envoy_types::pb::google::protobuf::Duration>,
}

/// The delay an `UNAVAILABLE` status asks for (1 s when it names none, as OTLP exporters assume).
fn retry_delay(status: &tonic::Status) -> Duration {
    let details = envoy_types::pb::google::rpc::Status::decode(status.details()).unwrap_or_default();
    details
        .details
        .iter()
        .filter(|any| any.type_url.ends_with("google.rpc.RetryInfo"))
        .find_map(|any| RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay)
        .map_or(Duration::from_secs(1), |d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

/// A codec that sends already-encoded `ExportTraceServiceRequest` bytes and decodes the response.
#[derive(Debug, Clone, Copy)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
