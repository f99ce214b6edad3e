//! The client side: upstream connections, driven by the request that uses a connection instead of by a
//! task of its own.
//!
//! A request is encoded from the buffered request by reference (so a retry re-sends it without a copy),
//! the response head is parsed with `httparse` into header values that share the read buffer, and the
//! response body is read from the socket as the downstream polls it. When the body has ended the
//! connection is idle and unpolled until its next request; whether the upstream closed it meanwhile is
//! checked when it is taken out of the pool ([`Connection::is_closed`]).

use super::{Chunk, Decoded, HeaderNames, READ_CHUNK, decode_chunked, ends_chunked, is_hop_by_hop, parse_length};
use crate::BoxError;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Largest response head accepted (hyper's client allowed about as much).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 100;
/// A body up to this size goes out in the same write as the head.
const COALESCE_BODY: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection closed before the request was sent: {0}")]
    Unsent(std::io::Error),
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream connection closed before the response was complete")]
    Closed,
    #[error("malformed upstream response: {0}")]
    Protocol(String),
}

impl Error {
    /// The request never reached the upstream: it may go out again on another connection.
    pub fn unsent(&self) -> bool {
        matches!(self, Error::Unsent(_))
    }
}

fn protocol(message: impl Into<String>) -> Error {
    Error::Protocol(message.into())
}

/// One HTTP/1.1 connection to an upstream. Always boxed ([`Connection::new`]): it moves from the pool into
/// each exchange and on into the response body, and a pointer is all that moves.
pub struct Connection<I> {
    io: I,
    /// Bytes read and not consumed yet; empty between exchanges.
    read: BytesMut,
    /// The request head being written; kept for its allocation.
    write: Vec<u8>,
    /// Offsets of the response's header names and values in `read`, reused between responses.
    offsets: Vec<[usize; 4]>,
    /// The last response's header names: an upstream sends the same fields response after response.
    names: HeaderNames,
}

/// What the read buffer holds of a response head.
enum Head<I> {
    Complete(Response<Body<I>>),
    /// Not all of it yet: the connection, to read more.
    Partial(Box<Connection<I>>),
}

/// How the response body is delimited (RFC 9112 section 6.3), and where its reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Ended,
}

impl<I> Connection<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(io: I) -> Box<Connection<I>> {
        Box::new(Connection {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            offsets: Vec::new(),
            names: HeaderNames::default(),
        })
    }

    /// Whether the pooled connection can no longer carry a request: the upstream closed it, reset it, or
    /// sent bytes nobody asked for. Never waits.
    pub fn is_closed(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.read.reserve(1);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.read).is_ready()
    }

    /// Sends `request` (origin-form URI, hop-by-hop headers already removed) and reads the response head;
    /// the body is read by polling the returned response's [`Body`], which owns the connection.
    pub async fn send(mut self: Box<Self>, request: &Request<Bytes>) -> Result<Response<Body<I>>, Error> {
        self.encode(request);
        let body = request.body();
        let coalesced = body.len() <= COALESCE_BODY;
        if coalesced {
            self.write.extend_from_slice(body);
        }
        // Nothing written yet: a failure here means the upstream never saw the request.
        let head = std::mem::take(&mut self.write);
        let written = self.io.write(&head).await.map_err(Error::Unsent)?;
        if written == 0 {
            return Err(Error::Unsent(std::io::ErrorKind::WriteZero.into()));
        }
        self.io.write_all(&head[written..]).await?;
        self.write = head;
        if !coalesced {
            self.io.write_all(body).await?;
        }
        self.io.flush().await?;
        // The pooled connection's buffer is empty: the answer is still to be read.
        let mut connection = self;
        loop {
            if connection.read.len() >= MAX_HEAD_BYTES {
                return Err(protocol(format!("response head larger than {MAX_HEAD_BYTES} bytes")));
            }
            connection.read.reserve(READ_CHUNK);
            let Connection { io, read, .. } = &mut *connection;
            if std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut *read)).await? == 0
            {
                return Err(Error::Closed);
            }
            connection = match connection.parse_head(request.method())? {
                Head::Complete(response) => return Ok(response),
                Head::Partial(connection) => connection,
            };
        }
    }

    fn encode(&mut self, request: &Request<Bytes>) {
        let out = &mut self.write;
        out.clear();
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(request.method().as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in request.headers() {
            if name == header::CONTENT_LENGTH {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // The body is buffered, so its length is known; methods that carry a body say so even when empty.
        let length = request.body().len();
        let says_length = length > 0
            || request.headers().contains_key(header::CONTENT_LENGTH)
            || matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH);
        if says_length {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The response, if `read` holds all of its head (interim 1xx responses are skipped); else the
    /// connection back, to read more.
    fn parse_head(mut self: Box<Self>, method: &Method) -> Result<Head<I>, Error> {
        loop {
            let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let base = self.read.as_ptr() as usize;
            let head_length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                &self.read,
                &mut headers,
            ) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => return Ok(Head::Partial(self)),
                Err(err) => return Err(protocol(err.to_string())),
            };
            let code = parsed.code.unwrap_or_default();
            let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
            self.offsets.clear();
            self.offsets.extend(parsed.headers.iter().map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                [name, name + h.name.len(), value, value + h.value.len()]
            }));
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(protocol("protocol upgrades are not supported"));
                }
                self.read.advance(head_length);
                continue;
            }
            let status = StatusCode::from_u16(code).map_err(|_| protocol(format!("status code {code}")))?;
            let head = self.read.split_to(head_length).freeze();
            // Room for the fields and the one the stack adds (`x-envoy-upstream-service-time`); the framing
            // fields among them are not kept.
            let mut map = HeaderMap::with_capacity(self.offsets.len());
            let mut framing = None;
            let mut chunked = false;
            let mut close = version == Version::HTTP_10;
            let mut listed = Vec::new();
            for (position, &[name_start, name_end, value_start, value_end]) in self.offsets.iter().enumerate() {
                let raw_name = &head[name_start..name_end];
                let name = self
                    .names
                    .get(position, raw_name)
                    .map_err(|_| protocol(format!("header name {:?}", String::from_utf8_lossy(raw_name))))?;
                let raw = &head[value_start..value_end];
                if name == header::TRANSFER_ENCODING {
                    // Only a last coding of `chunked` delimits the body; otherwise it runs to the close.
                    chunked = ends_chunked(raw);
                    close |= !chunked;
                    continue;
                } else if name == header::CONNECTION {
                    for option in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                        if option.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if option.eq_ignore_ascii_case(b"keep-alive") {
                            close = false;
                        } else if let Ok(name) = HeaderName::from_bytes(option) {
                            listed.push(name);
                        }
                    }
                    continue;
                } else if is_hop_by_hop(&name) {
                    continue;
                } else if name == header::CONTENT_LENGTH {
                    let length = parse_length(raw).ok_or_else(|| protocol("content-length"))?;
                    match framing {
                        Some(Framing::Length(known)) if known != length => {
                            return Err(protocol("conflicting content-length headers"));
                        }
                        _ => framing = Some(Framing::Length(length)),
                    }
                }
                let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
                    .map_err(|_| protocol(format!("value of header {name}")))?;
                map.append(name, value);
            }
            for name in &listed {
                map.remove(name);
            }
            let framing = match framing {
                _ if *method == Method::HEAD || matches!(code, 204 | 304) => Framing::Ended,
                // Transfer-Encoding overrides Content-Length, and a message with both is suspect: the
                // connection is not reused (RFC 9112 section 6.3).
                Some(_) if chunked => {
                    map.remove(header::CONTENT_LENGTH);
                    close = true;
                    Framing::Chunked(Chunk::Size)
                }
                _ if chunked => Framing::Chunked(Chunk::Size),
                Some(Framing::Length(0)) => Framing::Ended,
                Some(framing) => framing,
                None => Framing::Close,
            };
            let reusable = !close && framing != Framing::Close;
            let mut response = Response::new(Body { connection: Some(self), framing, reusable });
            *response.status_mut() = status;
            *response.headers_mut() = map;
            return Ok(Head::Complete(response));
        }
    }
}

/// A response body read from its connection as it is polled.
pub struct Body<I> {
    connection: Option<Box<Connection<I>>>,
    framing: Framing,
    /// The connection can take another request once the body has ended.
    reusable: bool,
}

impl<I> std::fmt::Debug for Body<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").field("framing", &self.framing).finish_non_exhaustive()
    }
}

impl<I> Body<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    /// The connection, if the body has ended and the connection can carry another request.
    pub fn take_reusable(&mut self) -> Option<Box<Connection<I>>> {
        if self.framing != Framing::Ended || !self.reusable {
            return None;
        }
        // Bytes past the end of the response answer nothing: the connection is out of step.
        self.connection.take().filter(|c| c.read.is_empty())
    }

    /// The next piece of the body that `read` holds, if any.
    fn decode(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(connection) = self.connection.as_mut() else { return Ok(None) };
        let read = &mut connection.read;
        match self.framing {
            Framing::Ended => Ok(None),
            Framing::Close => Ok((!read.is_empty()).then(|| read.split().freeze())),
            Framing::Length(left) => {
                if read.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(read.len());
                let left = left - take as u64;
                self.framing = if left == 0 { Framing::Ended } else { Framing::Length(left) };
                Ok(Some(read.split_to(take).freeze()))
            }
            Framing::Chunked(ref mut chunk) => match decode_chunked(read, chunk).map_err(Error::Protocol)? {
                Decoded::Data(data) => Ok(Some(data)),
                Decoded::More => Ok(None),
                Decoded::End => {
                    self.framing = Framing::Ended;
                    Ok(None)
                }
            },
        }
    }
}

impl<I> hyper::body::Body for Body<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(data) = self.decode()? {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
            }
            if self.framing == Framing::Ended {
                return Poll::Ready(None);
            }
            let Some(connection) = self.connection.as_mut() else { return Poll::Ready(None) };
            connection.read.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut connection.io), cx, &mut connection.read))?;
            if read == 0 {
                if self.framing == Framing::Close {
                    self.framing = Framing::Ended;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(Error::Closed.into())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Ended
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.framing {
            Framing::Length(left) => hyper::body::SizeHint::with_exact(left),
            Framing::Ended => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}
