//! HTTP/1.1 on both sides of the proxy, without a task or a channel per connection: the downstream
//! server ([`server`]) parses requests straight into what the stack takes and writes responses itself;
//! the upstream client ([`client`]) is driven by the request that uses a connection. Both parse heads with
//! `httparse` into header values that share the read buffer and decode chunked bodies with
//! [`decode_chunked`].
//!
//! hyper's HTTP/1 connections, used before, cost more in the proxy's profile than parsing and encoding
//! together: a dispatcher and a header-map round trip on the server side, a task fed through a channel
//! with a oneshot back on the client side (docs/benchmarks.md, sessions 10 and 11). HTTP/2 stays on hyper.

mod client;
pub mod server;

pub use client::{Body, Connection};

use bytes::{Buf, Bytes, BytesMut};

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Largest chunk-size line (with extensions) and trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data, with this much left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk, this many bytes in.
    Trailers(usize),
}

/// What [`decode_chunked`] made of the bytes it had.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    /// Needs more bytes.
    More,
    /// The body (with its trailer section, which is dropped) has ended.
    End,
}

/// Takes the next piece of a chunked body (RFC 9112 section 7.1) out of `read`.
pub fn decode_chunked(read: &mut BytesMut, state: &mut Chunk) -> Result<Decoded, String> {
    loop {
        match *state {
            Chunk::Data(left) => {
                if read.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(read.len());
                let left = left - take as u64;
                *state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                return Ok(Decoded::Data(read.split_to(take).freeze()));
            }
            Chunk::Size => {
                let Some(end) = find_crlf(read) else {
                    if read.len() > MAX_CHUNK_LINE {
                        return Err("chunk-size line too long".into());
                    }
                    return Ok(Decoded::More);
                };
                let line = &read[..end];
                let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                let size = parse_chunk_size(digits)
                    .ok_or_else(|| format!("chunk size {:?}", String::from_utf8_lossy(digits)))?;
                read.advance(end + 2);
                *state = if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) };
            }
            Chunk::DataEnd => {
                if read.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &read[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF".into());
                }
                read.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers(seen) => {
                // Trailer fields are read and dropped; an empty line ends the body.
                let Some(end) = find_crlf(read) else {
                    if seen + read.len() > MAX_TRAILERS {
                        return Err("trailer section too large".into());
                    }
                    return Ok(Decoded::More);
                };
                read.advance(end + 2);
                if end == 0 {
                    return Ok(Decoded::End);
                }
                *state = Chunk::Trailers(seen + end + 2);
            }
        }
    }
}

/// The header names of the last head a connection parsed, by position, as sent and parsed. A peer sends
/// the same fields in the same order message after message, and comparing the bytes costs less than
/// parsing a name again (which, for a name that is not a standard one, also allocates).
#[derive(Default)]
pub struct HeaderNames(Vec<(Box<[u8]>, http::HeaderName)>);

impl HeaderNames {
    /// The header name `raw` sent at `position` of the head: the one parsed for that position of the
    /// last head if the bytes are the same, else parsed and remembered for the next.
    fn get(&mut self, position: usize, raw: &[u8]) -> Result<http::HeaderName, http::header::InvalidHeaderName> {
        if let Some((known, name)) = self.0.get(position)
            && **known == *raw
        {
            return Ok(name.clone());
        }
        let name = http::HeaderName::from_bytes(raw)?;
        self.0.truncate(position);
        self.0.push((raw.into(), name.clone()));
        Ok(name)
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// A chunk size: hex digits, at most 15 of them (so it fits a u64 with room).
fn parse_chunk_size(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| Some(n * 16 + u64::from(char::from(d).to_digit(16)?)))
}

/// A content-length value: digits only, at most 19 of them.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Response headers that describe one hop only, besides `connection` and `transfer-encoding` (which each
/// side reads for framing): the upstream's are not relayed, and the downstream connection has its own.
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    name == http::header::UPGRADE || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Whether the last transfer coding of a `Transfer-Encoding` value is `chunked`: only then does it delimit
/// the body (RFC 9112 section 6.3).
fn ends_chunked(value: &[u8]) -> bool {
    value.rsplit(|&b| b == b',').next().is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `encoded` to the decoder in pieces cut at `cuts`; the data, or the first error.
    fn decode_in_pieces(encoded: &[u8], cuts: &[usize]) -> Result<Vec<u8>, String> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (encoded.len() + 1)).collect();
        cuts.push(encoded.len());
        cuts.sort_unstable();
        let (mut read, mut state, mut data, mut fed) = (BytesMut::new(), Chunk::Size, Vec::new(), 0);
        for cut in cuts {
            read.extend_from_slice(&encoded[fed..cut]);
            fed = cut;
            loop {
                match decode_chunked(&mut read, &mut state)? {
                    Decoded::Data(piece) => data.extend_from_slice(&piece),
                    Decoded::More => break,
                    Decoded::End => return Ok(data),
                }
            }
        }
        Err("incomplete".into())
    }

    fn encode(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:X};ext=1\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
        out
    }

    proptest! {
        #[test]
        fn chunked_decoding_does_not_depend_on_how_the_bytes_arrive(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let encoded = encode(&chunks);
            prop_assert_eq!(decode_in_pieces(&encoded, &cuts), Ok(chunks.concat()));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let _ = decode_in_pieces(&bytes, &cuts);
        }
    }

    #[test]
    fn header_names_are_reused_only_for_the_same_bytes_at_the_same_place() {
        let mut names = HeaderNames::default();
        let mut parse = |position, raw: &[u8]| names.get(position, raw).map(|n| n.to_string()).ok();
        for (position, raw) in [&b"Content-Length"[..], b"X-Backend", b"Date"].into_iter().enumerate() {
            parse(position, raw);
        }
        // The next head sends the same first field and another one of the same length second.
        assert_eq!(parse(0, b"Content-Length").as_deref(), Some("content-length"));
        assert_eq!(parse(1, b"X-Fronted").as_deref(), Some("x-fronted"));
        assert_eq!(parse(2, b"Date").as_deref(), Some("date"));
        assert_eq!(parse(1, b"X-Backend").as_deref(), Some("x-backend"));
        assert_eq!(parse(0, b"Bad Name"), None);
        assert_eq!(parse(0, b"Content-Type").as_deref(), Some("content-type"));
        assert_eq!(names.0.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), ["content-type"]);
    }

    #[test]
    fn lengths_and_chunk_sizes_reject_what_is_not_a_number() {
        assert_eq!(parse_length(b" 42 "), Some(42));
        for bad in [&b""[..], b"-1", b"4 2", b"0x10", b"99999999999999999999"] {
            assert_eq!(parse_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_chunk_size(b"fF"), Some(255));
        for bad in [&b""[..], b"g", b"1234567890abcdef"] {
            assert_eq!(parse_chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(ends_chunked(b"gzip, Chunked "));
        assert!(!ends_chunked(b"chunked, gzip"));
    }
}
