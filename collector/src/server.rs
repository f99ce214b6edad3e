//! Binding and running the listeners: one tonic server for OTLP/gRPC and Envoy ALS, one axum server for
//! OTLP/HTTP and access-log lines, and the API listener ([`crate::api`]).

use crate::api::{self, ApiState};
use crate::sources::grpc_status::fix_decode_status;
use crate::sources::otlp::grpc::{LogsReceiver, TraceReceiver};
use crate::sources::{SourceContext, accesslog, als, otlp};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogServiceServer;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

/// Largest gRPC message accepted, after decompression (OTLP's typical 4 MiB); larger ones are answered
/// `RESOURCE_EXHAUSTED`.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 4 << 20;

/// How long shutdown waits for in-flight requests. Envoy holds ALS streams open indefinitely, so waiting
/// for every connection to close would never end.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where each listener binds; `None` disables it. Port 0 picks a free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listeners {
    pub otlp_grpc: Option<SocketAddr>,
    pub otlp_http: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
}

/// The running listeners.
#[derive(Debug)]
pub struct Server {
    bound: Listeners,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    api: ApiState,
}

/// The HTTP listener's router: OTLP/HTTP plus access-log lines. Body limits are the handlers' own (they
/// also apply after decompression), so axum's default limit is off.
pub fn http_router(ctx: SourceContext) -> Router {
    otlp::http::routes().merge(accesslog::http::routes()).layer(DefaultBodyLimit::disable()).with_state(ctx)
}

/// Binds every enabled listener, then starts serving. Binding first means a port conflict fails start-up
/// before any listener accepts data. The API listener serves the probes and metrics ([`api::router`])
/// merged with `api_routes` (the REST API, built by a crate above the collector).
pub async fn start(
    listeners: Listeners,
    ctx: SourceContext,
    api_state: ApiState,
    api_routes: Router,
) -> io::Result<Server> {
    async fn bind(name: &str, addr: Option<SocketAddr>) -> io::Result<Option<TcpListener>> {
        let Some(addr) = addr else { return Ok(None) };
        TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| io::Error::new(e.kind(), format!("binding the {name} listener to {addr}: {e}")))
    }
    let grpc = bind("OTLP/gRPC", listeners.otlp_grpc).await?;
    let http = bind("OTLP/HTTP", listeners.otlp_http).await?;
    let api_listener = bind("API", listeners.api).await?;
    let local = |l: &Option<TcpListener>| l.as_ref().map(TcpListener::local_addr).transpose();
    let bound = Listeners { otlp_grpc: local(&grpc)?, otlp_http: local(&http)?, api: local(&api_listener)? };

    let (shutdown, _) = watch::channel(false);
    let stopped = |rx: watch::Receiver<bool>| async move {
        let mut rx = rx;
        // An error means the sender is gone, which also means: stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut tasks = JoinSet::new();
    if let Some(listener) = grpc {
        let signal = stopped(shutdown.subscribe());
        let trace = TraceServiceServer::new(TraceReceiver(ctx.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let logs = LogsServiceServer::new(LogsReceiver(ctx.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let als = AccessLogServiceServer::new(als::grpc::AlsReceiver(ctx.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        // The default receive window (hyper's 1 MiB per stream and per connection) is smaller than an
        // export may be (4 MiB): a client sending a larger batch stops at the window and waits a round trip
        // for it to reopen, which halved OTLP/gRPC throughput in bench/collector.sh against OTLP/HTTP. A
        // window as large as the largest message lets a whole export arrive at once.
        let window = u32::try_from(MAX_GRPC_MESSAGE_BYTES).unwrap_or(u32::MAX);
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(window)
            .initial_connection_window_size(window.saturating_mul(4))
            .layer(tower::util::MapResponseLayer::new(fix_decode_status::<tonic::body::Body>))
            .add_service(trace)
            .add_service(logs)
            .add_service(als);
        tasks.spawn(async move {
            let result = server.serve_with_incoming_shutdown(TcpIncoming::from(listener), signal).await;
            ("otlp_grpc", result.map_err(|e| e.to_string()))
        });
    }
    if let Some(listener) = http {
        let signal = stopped(shutdown.subscribe());
        let router = http_router(ctx.clone());
        tasks.spawn(async move {
            // With the peer's address in each request, for the API's per-client rate limit.
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let result = axum::serve(listener, service).with_graceful_shutdown(signal).await;
            ("otlp_http", result.map_err(|e| e.to_string()))
        });
    }
    if let Some(listener) = api_listener {
        let signal = stopped(shutdown.subscribe());
        let router = api::router(api_state.clone()).merge(api_routes);
        tasks.spawn(async move {
            let result = axum::serve(listener, router).with_graceful_shutdown(signal).await;
            ("api", result.map_err(|e| e.to_string()))
        });
    }
    api_state.ready.store(true, Ordering::Release);
    Ok(Server { bound, shutdown, tasks, api: api_state })
}

impl Server {
    /// The addresses actually bound (the chosen ports where port 0 was asked for).
    pub fn local_addrs(&self) -> Listeners {
        self.bound
    }

    /// Serves until `signal` resolves or a listener fails, then shuts down: readiness goes false, the
    /// listeners stop accepting, and in-flight requests get [`SHUTDOWN_GRACE`] to finish. Returns the
    /// first listener error, if any.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), String> {
        let mut failure = None;
        tokio::select! {
            () = signal => {}
            Some(joined) = self.tasks.join_next() => failure = Some(describe(joined)),
        }
        self.api.ready.store(false, Ordering::Release);
        // Receivers may be gone already; then there is nobody to tell.
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Err(e) = describe(joined) {
                    failure.get_or_insert(Err(e));
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "closing connections still open after the shutdown grace period");
            self.tasks.abort_all();
        }
        failure.unwrap_or(Ok(()))
    }
}

fn describe(joined: Result<(&'static str, Result<(), String>), tokio::task::JoinError>) -> Result<(), String> {
    match joined {
        Ok((_, Ok(()))) => Ok(()),
        Ok((name, Err(e))) => Err(format!("{name} listener failed: {e}")),
        Err(e) => Err(format!("a listener task failed: {e}")),
    }
}
