//! Listeners: accept, decide per connection whether to terminate TLS (always, never, or — under
//! PERMISSIVE — by sniffing the first byte for a TLS handshake record), pick the server certificate by
//! SNI, and serve HTTP/1.1 or HTTP/2 (h2c prior knowledge or ALPN `h2`) with header-size, connection and
//! idle limits. Malformed input ends that connection only.

use crate::config::{SharedSnapshot, Snapshot, View, pick_server_tls};
use crate::stack::{ConnInfo, HttpService, Side};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meshlens_model::mesh::security::MtlsMode;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Downstream limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open downstream connections per listener; more are closed on accept.
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body buffered; larger gets 413.
    pub max_request_body: usize,
    /// How long a keep-alive connection may wait for the next request's headers.
    pub idle_timeout: Duration,
    /// Time allowed for a TLS handshake (and for the first byte when sniffing).
    pub handshake_timeout: Duration,
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 60 * 1024,
            max_request_body: 8 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1024,
        }
    }
}

/// What to do with TLS on a new connection.
enum ConnTls {
    Plain,
    Terminate { optional: bool, configs: TlsConfigs },
}

enum TlsConfigs {
    Single(Arc<rustls::ServerConfig>),
    BySni(Vec<crate::config::ServerTls>),
}

/// Decided per connection from the current snapshot, so a PeerAuthentication change applies to new
/// connections after a reload.
fn conn_tls(snapshot: &Snapshot, side: Side, port: u16) -> ConnTls {
    match (&snapshot.view, side) {
        (View::Gateway(ports), _) => match ports.get(&port) {
            Some(gw) if !gw.tls.is_empty() => {
                ConnTls::Terminate { optional: gw.plaintext, configs: TlsConfigs::BySni(gw.tls.clone()) }
            }
            _ => ConnTls::Plain,
        },
        (View::Sidecar(view), Side::Inbound) => {
            let mode = view.inbound.get(&port).map_or(MtlsMode::Permissive, |(_, mode, _)| *mode);
            match (&view.server_tls, mode) {
                (_, MtlsMode::Disable) | (None, _) => ConnTls::Plain,
                (Some(config), MtlsMode::Strict) => {
                    ConnTls::Terminate { optional: false, configs: TlsConfigs::Single(config.clone()) }
                }
                (Some(config), _) => ConnTls::Terminate { optional: true, configs: TlsConfigs::Single(config.clone()) },
            }
        }
        (View::Sidecar(_), _) => ConnTls::Plain,
    }
}

/// Everything a listener needs.
#[derive(Clone)]
pub struct ListenerContext {
    pub side: Side,
    /// The config port (Gateway server port or workload port).
    pub port: u16,
    pub snapshot: SharedSnapshot,
    pub service: HttpService,
    pub limits: Limits,
    pub shutdown: watch::Receiver<bool>,
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, ctx: ListenerContext) {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "connection limit reached; closing");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(err) = handle(stream, remote, ctx).await {
                tracing::debug!(%remote, %err, "connection ended with an error");
            }
        });
    }
}

async fn handle(stream: TcpStream, remote: SocketAddr, ctx: ListenerContext) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let mut conn = ConnInfo {
        local,
        remote,
        port: ctx.port,
        sni: None,
        tls_version: None,
        peer: None,
        peer_principal: None,
        istio_sni: None,
        tls: false,
        upstream_header: OnceLock::new(),
    };
    let policy = conn_tls(&ctx.snapshot.current(), ctx.side, ctx.port);
    let (optional, configs) = match policy {
        ConnTls::Plain => return serve_plaintext(stream, conn, ctx).await,
        ConnTls::Terminate { optional, configs } => (optional, configs),
    };
    if optional {
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(ctx.limits.handshake_timeout, stream.peek(&mut first))
            .await
            .map_err(|_| "no data before the handshake timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        // 0x16 is a TLS handshake record; anything else is plaintext HTTP (PERMISSIVE).
        if peeked == 0 || first[0] != 0x16 {
            return serve_plaintext(stream, conn, ctx).await;
        }
    }
    let handshake = async {
        let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = acceptor.await.map_err(|e| format!("TLS: {e}"))?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let config = match &configs {
            TlsConfigs::Single(config) => config.clone(),
            TlsConfigs::BySni(servers) => pick_server_tls(servers, sni.as_deref())
                .map(|s| s.config.clone())
                .ok_or_else(|| format!("no server for SNI {sni:?}"))?,
        };
        let tls = start.into_stream(config).await.map_err(|e| format!("TLS handshake: {e}"))?;
        Ok::<_, String>((tls, sni))
    };
    let (tls, sni) = tokio::time::timeout(ctx.limits.handshake_timeout, handshake)
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())??;
    let session = tls.get_ref().1;
    conn.tls = true;
    conn.sni = sni;
    conn.tls_version = session.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    });
    // The verifier accepted the chain; the identity is the leaf's SPIFFE ID.
    conn.peer = session.peer_certificates().and_then(|certs| certs.first()).and_then(crate::tls::spiffe_id_of);
    conn.peer_principal = conn.peer.as_ref().map(|peer| Arc::from(peer.to_string()));
    conn.istio_sni = conn.sni.as_deref().and_then(|sni| sni.parse().ok());
    // HTTP/2 over TLS is negotiated by ALPN (RFC 9113 section 3.2); anything else speaks HTTP/1.
    let protocols = if session.alpn_protocol() == Some(b"h2") { Protocols::Http2 } else { Protocols::Http1 };
    serve_http(tls, conn, ctx, protocols).await
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4), which h2c clients with prior knowledge open with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which HTTP versions a connection may speak.
#[derive(Clone, Copy)]
enum Protocols {
    /// The proxy's own HTTP/1.1 server (`h1::server`).
    Http1,
    /// hyper's HTTP/2 server.
    Http2,
    /// HTTP/1.1 or HTTP/2, told apart by the first bytes (hyper-util's `auto`, which rewinds them).
    Detect,
}

/// A plaintext connection: HTTP/1 unless its first bytes could be the HTTP/2 preface (h2c with prior
/// knowledge). Deciding here, by a peek, leaves HTTP/1 connections to the proxy's own server.
async fn serve_plaintext(stream: TcpStream, conn: ConnInfo, ctx: ListenerContext) -> Result<(), String> {
    let mut head = [0u8; H2_PREFACE.len()];
    let idle = Some(ctx.limits.idle_timeout).filter(|d| !d.is_zero());
    let first_bytes = async {
        match idle {
            Some(idle) => tokio::time::timeout(idle, stream.peek(&mut head))
                .await
                .map_err(|_| "no request before the idle timeout".to_owned())?,
            None => stream.peek(&mut head).await,
        }
        .map_err(|e| e.to_string())
    };
    let mut shutdown = ctx.shutdown.clone();
    let peeked = tokio::select! {
        peeked = first_bytes => peeked?,
        _ = shutdown.changed() => return Ok(()),
    };
    let protocols =
        if peeked > 0 && H2_PREFACE.starts_with(&head[..peeked]) { Protocols::Detect } else { Protocols::Http1 };
    serve_http(stream, conn, ctx, protocols).await
}

async fn serve_http<I>(io: I, conn: ConnInfo, ctx: ListenerContext, protocols: Protocols) -> Result<(), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    // A zero idle timeout means none (HTTP/1) or hyper's defaults (HTTP/2).
    let idle = Some(ctx.limits.idle_timeout).filter(|d| !d.is_zero());
    let mut shutdown = ctx.shutdown.clone();
    let detect = match protocols {
        Protocols::Http2 => false,
        Protocols::Detect => true,
        Protocols::Http1 => {
            let settings = crate::h1::server::Settings {
                max_header_bytes: ctx.limits.max_header_bytes,
                max_request_body: ctx.limits.max_request_body,
                idle_timeout: idle,
            };
            return crate::h1::server::serve(io, conn, &ctx.service, settings, ctx.shutdown.clone())
                .await
                .map_err(|e| e.to_string());
        }
    };
    let stack = ctx.service.clone();
    let hyper_service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let (stack, conn) = (stack.clone(), conn.clone());
        async move { Ok::<_, std::convert::Infallible>(stack.handle(request, conn).await) }
    });
    let io = TokioIo::new(io);
    let max_header_list_size = u32::try_from(ctx.limits.max_header_bytes).unwrap_or(u32::MAX);
    // Serves until the connection ends; on shutdown, finishes in-flight requests and accepts no new ones.
    macro_rules! serve_until_shutdown {
        ($connection:expr) => {{
            let connection = $connection;
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => result.map_err(|e| e.to_string()),
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await.map_err(|e| e.to_string())
                }
            }
        }};
    }
    // The same HTTP/2 settings for connections that chose HTTP/2 and for those still detecting.
    macro_rules! http2_settings {
        ($builder:expr) => {
            $builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(ctx.limits.max_concurrent_streams)
                .max_header_list_size(max_header_list_size)
                .keep_alive_interval(idle.map(|d| d / 2))
        };
    }
    if detect {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // hyper refuses buffers under 8 KiB.
        builder.http1().timer(TokioTimer::new()).max_buf_size(ctx.limits.max_header_bytes.max(8192));
        if let Some(idle) = idle {
            builder.http1().header_read_timeout(idle);
        }
        http2_settings!(builder.http2());
        serve_until_shutdown!(builder.serve_connection(io, hyper_service))
    } else {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2_settings!(builder);
        serve_until_shutdown!(builder.serve_connection(io, hyper_service))
    }
}
