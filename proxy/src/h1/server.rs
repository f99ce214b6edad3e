//! The server side: downstream HTTP/1.1 connections. One loop per connection reads a request head, reads
//! the body (the stack buffers it for retries and mirrors anyway), hands the request to the stack and
//! writes the response, coalescing the head with the body frames that are ready. Requests on a connection
//! are served one at a time, in order; pipelined requests wait in the read buffer.
//!
//! Input the server cannot hand on is answered here and ends the connection: a head over the size limit
//! or with too many fields gets 431, a transfer coding other than `chunked` 501, anything else malformed
//! 400; each is logged and counted like Envoy's downstream protocol errors (flag `DPE`). A body over the
//! limit is handed to the stack as [`BodyTooLarge`] (it answers 413 and logs the request) and the rest of
//! it is never read. Every close after a request lingers briefly, reading and dropping what the client
//! still sends, so that the answer is not lost to a reset.

use super::{Chunk, Decoded, HeaderNames, READ_CHUNK, decode_chunked, ends_chunked, is_hop_by_hop, parse_length};
use crate::error::{BodyTooLarge, codec_error_details};
use crate::stack::{ConnInfo, Stack};
use crate::{BoxError, ProxyBody};
use bytes::{Bytes, BytesMut};
use futures::FutureExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// Most header fields in a request head (hyper's default, which the proxy used before).
const MAX_HEADERS: usize = 100;
/// Room made in the read buffer for a request head: most heads fit, and an idle keep-alive connection
/// holds no more than this (a body is read in larger pieces).
const HEAD_READ: usize = 4 * 1024;
/// Response body frames up to this size are copied into the write buffer, to go out with the head.
const COALESCE: usize = 16 * 1024;
/// An answer's header map is kept for the next request up to this many headers: an idle connection holds
/// it, and one large answer should not make it hold a large map for the rest of its life.
const KEPT_HEADER_MAP: usize = 32;
/// How long a closing connection keeps reading (and dropping) what the client still sends, and how much.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Limits of one downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest request head (request line and header fields); larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body read; larger is handed on as [`BodyTooLarge`].
    pub max_request_body: usize,
    /// How long the client may send nothing while a request is awaited or read.
    pub idle_timeout: Option<Duration>,
}

/// Why a connection ended before its client closed it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("nothing from the client for {0:?} in the middle of a request")]
    Idle(Duration),
    #[error("client closed the connection in the middle of a request")]
    Truncated,
    #[error("malformed request ({status}): {reason}")]
    Rejected { status: StatusCode, reason: String },
    #[error("response body: {0}")]
    ResponseBody(BoxError),
}

fn rejected(status: StatusCode, reason: impl Into<String>) -> Error {
    Error::Rejected { status, reason: reason.into() }
}

fn head_too_large(max_header_bytes: usize) -> Error {
    rejected(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, format!("request head larger than {max_header_bytes} bytes"))
}

/// Serves the connection's requests until the client closes it, it idles out, a request asks for the
/// close, or `shutdown` changes: the request in flight then gets its response (with `connection: close`)
/// and no further request is read, even one already pipelined.
pub async fn serve<I>(
    io: I,
    conn: Arc<ConnInfo>,
    stack: &Stack,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    // Waited for between requests, in one future for the connection's life rather than one per wait.
    let mut watcher = shutdown.clone();
    let signal = std::pin::pin!(async move {
        let _ = watcher.changed().await;
    });
    let mut connection = Connection::new(io, settings.idle_timeout.map(Idle::new), shutdown, Some(signal));
    let outcome = connection.serve_requests(&conn, stack, settings).await;
    if let Err(Error::Rejected { status, .. }) = &outcome {
        stack.log_rejected(conn, *status, codec_error_details(*status));
        let mut head = Vec::with_capacity(128);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or_default());
        head.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n");
        write_date(&mut head);
        head.extend_from_slice(b"\r\n");
        let _ = connection.io.write_all(&head).await;
        let _ = connection.io.flush().await;
    }
    if !matches!(outcome, Err(Error::Io(_) | Error::Truncated)) {
        connection.linger().await;
    }
    outcome
}

struct Connection<'s, I> {
    io: I,
    /// Bytes read and not consumed yet.
    read: BytesMut,
    /// The response head (and the body frames coalesced with it) being written.
    write: Vec<u8>,
    /// Offsets of the request's target, header names and values in `read`, reused between requests.
    offsets: Vec<[usize; 4]>,
    /// The last request's header names: a client sends the same fields request after request.
    names: HeaderNames,
    /// The last response's header map, emptied: the next request's headers go into its allocations.
    headers: HeaderMap,
    idle: Option<Idle>,
    /// Checked before each request and each response.
    shutdown: watch::Receiver<bool>,
    /// Completes when `shutdown` changes; polled while waiting between requests, `None` once completed.
    shutdown_signal: Option<Pin<&'s mut (dyn Future<Output = ()> + Send)>>,
}

/// A request head, parsed.
struct Head {
    request: Request<()>,
    body: RequestFraming,
    keep_alive: bool,
    expect_continue: bool,
}

#[derive(Debug, Clone, Copy)]
enum RequestFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// How the response body goes out, and where writing it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    Bodiless,
    /// `content-length`, with this much left to write.
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a body of unknown length).
    Close,
}

/// What a read brought.
enum Filled {
    Bytes,
    Eof,
    /// Between requests: the idle timeout passed or the proxy is shutting down.
    Done,
}

impl<'s, I> Connection<'s, I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    fn new(
        io: I,
        idle: Option<Idle>,
        shutdown: watch::Receiver<bool>,
        shutdown_signal: Option<Pin<&'s mut (dyn Future<Output = ()> + Send)>>,
    ) -> Self {
        Connection {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            offsets: Vec::new(),
            names: HeaderNames::default(),
            headers: HeaderMap::new(),
            idle,
            shutdown,
            shutdown_signal,
        }
    }

    async fn serve_requests(&mut self, conn: &Arc<ConnInfo>, stack: &Stack, settings: Settings) -> Result<(), Error> {
        loop {
            if self.shutting_down() {
                return Ok(());
            }
            let Some(head) = self.read_head(settings.max_header_bytes).await? else { return Ok(()) };
            let Head { request, body, mut keep_alive, expect_continue } = head;
            let body = self.read_body(body, expect_continue, settings.max_request_body).await?;
            // The rest of a body over the limit is never read: the connection cannot carry another request.
            keep_alive &= body.is_ok();
            let method = request.method().clone();
            let version = request.version();
            let response = stack.handle(request.map(|()| RequestBody(Some(body))), Arc::clone(conn)).await;
            keep_alive &= !self.shutting_down();
            keep_alive &= self.write_response(response, &method, version, keep_alive).await?;
            if !keep_alive {
                return Ok(());
            }
        }
    }

    /// Whether the proxy is shutting down (or its shutdown sender is gone).
    fn shutting_down(&self) -> bool {
        self.shutdown.has_changed().unwrap_or(true)
    }

    /// Reads until `read` holds a whole request head; `None` when the connection ends between requests.
    async fn read_head(&mut self, max_header_bytes: usize) -> Result<Option<Head>, Error> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) = self.parse_head(max_header_bytes)? {
                    return Ok(Some(head));
                }
                if self.read.len() > max_header_bytes {
                    return Err(head_too_large(max_header_bytes));
                }
            }
            let between_requests = self.read.is_empty();
            match self.fill(HEAD_READ, between_requests).await? {
                Filled::Bytes => {}
                Filled::Eof if between_requests => return Ok(None),
                Filled::Eof => return Err(Error::Truncated),
                Filled::Done => return Ok(None),
            }
        }
    }

    /// The request whose head `read` holds, taken out of it; `None` if the head is not complete yet.
    fn parse_head(&mut self, max_header_bytes: usize) -> Result<Option<Head>, Error> {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let base = self.read.as_ptr() as usize;
        let head_length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut parsed,
            &self.read,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(length)) if length > max_header_bytes => {
                return Err(head_too_large(max_header_bytes));
            }
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(rejected(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("more than {MAX_HEADERS} header fields"),
                ));
            }
            Err(err) => return Err(rejected(StatusCode::BAD_REQUEST, err.to_string())),
        };
        let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
            .map_err(|_| rejected(StatusCode::BAD_REQUEST, "method"))?;
        let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        let target = parsed.path.unwrap_or_default();
        let target_start = target.as_ptr() as usize - base;
        self.offsets.clear();
        self.offsets.push([target_start, target_start + target.len(), 0, 0]);
        self.offsets.extend(parsed.headers.iter().map(|h| {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            [name, name + h.name.len(), value, value + h.value.len()]
        }));
        let head = self.read.split_to(head_length).freeze();
        let [target_start, target_end, ..] = self.offsets[0];
        let uri = Uri::from_maybe_shared(head.slice(target_start..target_end))
            .map_err(|err| rejected(StatusCode::BAD_REQUEST, format!("request target: {err}")))?;

        let mut map = std::mem::take(&mut self.headers);
        map.reserve(self.offsets.len() + 3);
        let mut length = None;
        let mut chunked = false;
        let mut keep_alive = version == Version::HTTP_11;
        let mut expect_continue = false;
        for (position, &[name_start, name_end, value_start, value_end]) in self.offsets[1..].iter().enumerate() {
            let name = self
                .names
                .get(position, &head[name_start..name_end])
                .map_err(|_| rejected(StatusCode::BAD_REQUEST, "header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
                .map_err(|_| rejected(StatusCode::BAD_REQUEST, format!("value of header {name}")))?;
            if name == header::CONTENT_LENGTH {
                let parsed = parse_length(value.as_bytes())
                    .ok_or_else(|| rejected(StatusCode::BAD_REQUEST, "content-length"))?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(rejected(StatusCode::BAD_REQUEST, "conflicting content-length headers"));
                }
                length = Some(parsed);
            } else if name == header::TRANSFER_ENCODING {
                let codings = value.as_bytes();
                if !ends_chunked(codings) {
                    return Err(rejected(StatusCode::BAD_REQUEST, "transfer coding other than chunked last"));
                }
                if codings.contains(&b',') {
                    return Err(rejected(StatusCode::NOT_IMPLEMENTED, "transfer codings other than chunked"));
                }
                chunked = true;
            } else if name == header::CONNECTION {
                for option in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if option.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            } else if name == header::EXPECT {
                expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
            }
            map.append(name, value);
        }
        let body = match length {
            // Both: chunked delimits the body, and a message that says both is suspect (RFC 9112 section
            // 6.3), so the connection carries no further request.
            Some(_) if chunked => {
                keep_alive = false;
                RequestFraming::Chunked
            }
            _ if chunked => RequestFraming::Chunked,
            Some(0) | None => RequestFraming::Empty,
            Some(length) => RequestFraming::Length(length),
        };
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = map;
        Ok(Some(Head { request, body, keep_alive, expect_continue: expect_continue && version == Version::HTTP_11 }))
    }

    /// Reads the request body; `Err(BodyTooLarge)` (and the body left unread) past `max` bytes.
    async fn read_body(
        &mut self,
        framing: RequestFraming,
        expect_continue: bool,
        max: usize,
    ) -> Result<Result<Bytes, BodyTooLarge>, Error> {
        match framing {
            RequestFraming::Empty => Ok(Ok(Bytes::new())),
            RequestFraming::Length(length) if length > max as u64 => Ok(Err(BodyTooLarge)),
            RequestFraming::Length(length) => {
                let length = length as usize;
                if expect_continue && self.read.len() < length {
                    self.continue_100().await?;
                }
                while self.read.len() < length {
                    self.fill_body().await?;
                }
                Ok(Ok(self.read.split_to(length).freeze()))
            }
            RequestFraming::Chunked => {
                if expect_continue && self.read.is_empty() {
                    self.continue_100().await?;
                }
                let mut state = Chunk::Size;
                let mut body = BytesMut::new();
                loop {
                    match decode_chunked(&mut self.read, &mut state)
                        .map_err(|reason| rejected(StatusCode::BAD_REQUEST, reason))?
                    {
                        Decoded::Data(data) if body.len() + data.len() > max => return Ok(Err(BodyTooLarge)),
                        Decoded::Data(data) => body.extend_from_slice(&data),
                        Decoded::More => self.fill_body().await?,
                        Decoded::End => return Ok(Ok(body.freeze())),
                    }
                }
            }
        }
    }

    async fn continue_100(&mut self) -> Result<(), Error> {
        self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn fill_body(&mut self) -> Result<(), Error> {
        match self.fill(READ_CHUNK, false).await? {
            Filled::Bytes => Ok(()),
            Filled::Eof | Filled::Done => Err(Error::Truncated),
        }
    }

    /// Reads more bytes into `read`, with at least `room` free for them. Between requests the wait also
    /// ends at shutdown; any wait ends when the client has sent nothing for the idle timeout (an error
    /// unless between requests).
    async fn fill(&mut self, room: usize, between_requests: bool) -> Result<Filled, Error> {
        self.read.reserve(room);
        let Connection { io, read, idle, shutdown_signal, .. } = self;
        let filled = poll_fn(|cx| {
            if let Poll::Ready(read) = tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut *read) {
                return Poll::Ready(read.map(|n| if n == 0 { Filled::Eof } else { Filled::Bytes }));
            }
            if between_requests
                && let Some(signal) = shutdown_signal.as_mut()
                && signal.as_mut().poll(cx).is_ready()
            {
                *shutdown_signal = None;
                return Poll::Ready(Ok(Filled::Done));
            }
            match idle.as_mut() {
                Some(idle) => idle.poll_expired(cx).map(|()| Ok(Filled::Done)),
                None => Poll::Pending,
            }
        })
        .await?;
        match filled {
            Filled::Bytes => {
                if let Some(idle) = &mut self.idle {
                    idle.last_read = Instant::now();
                }
            }
            Filled::Done if !between_requests => {
                return Err(Error::Idle(self.idle.as_ref().map_or(Duration::ZERO, |idle| idle.limit)));
            }
            _ => {}
        }
        Ok(filled)
    }

    /// Writes the response; whether the connection can carry another request afterwards.
    async fn write_response(
        &mut self,
        response: Response<ProxyBody>,
        method: &Method,
        version: Version,
        mut keep_alive: bool,
    ) -> Result<bool, Error> {
        let (mut parts, mut body) = response.into_parts();
        let status = parts.status;
        let out = &mut self.write;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or_default().as_bytes());
        out.extend_from_slice(b"\r\n");
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let mut declared = None;
        let mut has_date = false;
        for (name, value) in &parts.headers {
            if name == header::CONTENT_LENGTH {
                // Kept on HEAD and 304 answers, where it describes the body not sent.
                match parse_length(value.as_bytes()) {
                    Some(length) if declared.is_none() => declared = Some(length),
                    _ => continue,
                }
                if bodiless && status != StatusCode::NOT_MODIFIED && *method != Method::HEAD {
                    continue;
                }
            } else if name == header::TRANSFER_ENCODING || name == header::CONNECTION || is_hop_by_hop(name) {
                // This connection's framing is written below.
                continue;
            } else if name == header::DATE {
                has_date = true;
            }
            write_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        let mut framing = if bodiless {
            ResponseFraming::Bodiless
        } else if let Some(length) = declared {
            ResponseFraming::Length(length)
        } else if let Some(length) = body.size_hint().exact() {
            let _ = write!(out, "content-length: {length}\r\n");
            ResponseFraming::Length(length)
        } else if version == Version::HTTP_11 {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            ResponseFraming::Chunked
        } else {
            keep_alive = false;
            ResponseFraming::Close
        };
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        if !has_date {
            write_date(out);
        }
        out.extend_from_slice(b"\r\n");
        if parts.headers.capacity() <= KEPT_HEADER_MAP {
            parts.headers.clear();
            self.headers = parts.headers;
        }

        if framing != ResponseFraming::Bodiless {
            while !body.is_end_stream() {
                // Frames that are ready join the head in one write; the write goes out before waiting.
                let frame = if self.write.is_empty() {
                    body.frame().await
                } else {
                    match body.frame().now_or_never() {
                        Some(frame) => frame,
                        None => {
                            self.flush().await?;
                            continue;
                        }
                    }
                };
                let Some(frame) = frame else { break };
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(err) => {
                        // The client sees a message cut short; the connection cannot be reused.
                        let _ = self.flush().await;
                        return Err(Error::ResponseBody(err));
                    }
                };
                let Ok(data) = frame.into_data() else { continue }; // trailers are not sent over HTTP/1
                self.write_body_data(data, &mut framing).await?;
            }
            match framing {
                ResponseFraming::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
                ResponseFraming::Length(left) if left > 0 => {
                    let _ = self.flush().await;
                    return Err(Error::ResponseBody(format!("response body ended {left} bytes short").into()));
                }
                _ => {}
            }
        }
        self.flush().await?;
        // Dropped only now, so that the access log's duration covers writing the response.
        drop(body);
        Ok(keep_alive && framing != ResponseFraming::Close)
    }

    async fn write_body_data(&mut self, data: Bytes, framing: &mut ResponseFraming) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        match framing {
            ResponseFraming::Length(left) => {
                if data.len() as u64 > *left {
                    return Err(Error::ResponseBody("response body longer than its content-length".into()));
                }
                *left -= data.len() as u64;
            }
            ResponseFraming::Chunked => {
                let _ = write!(self.write, "{:x}\r\n", data.len());
            }
            ResponseFraming::Close | ResponseFraming::Bodiless => {}
        }
        if data.len() <= COALESCE {
            self.write.extend_from_slice(&data);
        } else {
            self.flush().await?;
            self.io.write_all(&data).await?;
        }
        if *framing == ResponseFraming::Chunked {
            self.write.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if !self.write.is_empty() {
            self.io.write_all(&self.write).await?;
            self.write.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Closes the sending side, then reads and drops what the client still sends (for a while, up to a
    /// limit): closing with unread bytes would reset the connection and could destroy the last answer
    /// before the client reads it.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let drain = async {
            let mut scratch = vec![0u8; 16 * 1024];
            let mut drained = 0;
            while drained < LINGER_BYTES {
                match self.io.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => drained += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The idle timeout, armed once per connection: a read records its time, and the timer, when it fires,
/// re-arms itself for the time still left instead of being reset on every read.
struct Idle {
    limit: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(limit: Duration) -> Idle {
        let now = Instant::now();
        Idle { limit, last_read: now, timer: Box::pin(tokio::time::sleep_until(now + limit)) }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last_read + self.limit;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

/// A request body the server has read (or found over the limit).
pub struct RequestBody(Option<Result<Bytes, BodyTooLarge>>);

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyTooLarge;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BodyTooLarge>>> {
        Poll::Ready(match self.0.take() {
            Some(Ok(data)) if data.is_empty() => None,
            other => other.map(|body| body.map(hyper::body::Frame::data)),
        })
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            None => true,
            Some(Ok(data)) => data.is_empty(),
            Some(Err(_)) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.0 {
            Some(Ok(data)) => hyper::body::SizeHint::with_exact(data.len() as u64),
            None => hyper::body::SizeHint::with_exact(0),
            Some(Err(_)) => hyper::body::SizeHint::default(),
        }
    }
}

/// Writes a `date` header: the time formatted once per second per thread, as servers do.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        write_header(out, b"date", text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(bytes: &[u8], max_header_bytes: usize) -> (Result<Option<Head>, Error>, usize) {
        let (io, _peer) = tokio::io::duplex(64);
        let mut connection = Connection::new(io, None, watch::channel(false).1, None);
        connection.read.extend_from_slice(bytes);
        let parsed = connection.parse_head(max_header_bytes);
        (parsed, connection.read.len())
    }

    const HEAD: &[u8] = b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";

    proptest! {
        #[test]
        fn any_bytes_are_parsed_or_rejected_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes, 1024);
        }

        #[test]
        fn a_damaged_head_is_parsed_or_rejected_and_never_read_past(
            at in 0..HEAD.len(),
            byte in any::<u8>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = HEAD.to_vec();
            bytes[at] = byte;
            bytes.extend_from_slice(&tail);
            let (parsed, left) = parse(&bytes, 1024);
            if let Ok(Some(_)) = parsed {
                // Whatever followed the head (the body, the next request) stays in the buffer.
                prop_assert!(left >= tail.len());
            }
        }

        #[test]
        fn a_valid_head_is_taken_whole_and_leaves_the_body(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = HEAD.to_vec();
            bytes.extend_from_slice(&body);
            let (parsed, left) = parse(&bytes, 1024);
            let head = parsed.unwrap().unwrap();
            prop_assert_eq!(left, body.len());
            prop_assert_eq!(head.request.uri().path(), "/a");
            prop_assert!(matches!(head.body, RequestFraming::Length(3)));
            prop_assert!(head.keep_alive);
        }
    }

    #[test]
    fn a_head_over_the_limit_is_rejected_even_when_complete() {
        let (parsed, _) = parse(HEAD, HEAD.len() - 1);
        assert!(matches!(parsed, Err(Error::Rejected { status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, .. })));
        let (parsed, _) = parse(HEAD, HEAD.len());
        assert!(matches!(parsed, Ok(Some(_))));
    }
}
