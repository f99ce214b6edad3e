//! Reading an HTTP request body without trusting it: the body is limited as received and again after
//! decompression, so a small gzip bomb cannot expand into gigabytes (OTLP/HTTP asks for both limits).

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::io::Read;

/// Largest body accepted, compressed or not: the OTLP specification's recommended 20 MiB.
pub const MAX_BODY_BYTES: usize = 20 << 20;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes{}", if *.decompressed { " after decompression" } else { "" })]
    TooLarge { limit: usize, decompressed: bool },
    #[error("content-encoding {0:?} is not supported (use gzip or none)")]
    UnsupportedEncoding(String),
    #[error("request body is not valid gzip: {0}")]
    Gzip(String),
    #[error("reading the request body failed: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Gzip(_) | BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads the whole body (at most `limit` bytes) and undoes a gzip `Content-Encoding` (again at most
/// `limit` bytes).
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("" | "identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => true,
        Some(e) => return Err(BodyError::UnsupportedEncoding(e.to_owned())),
    };
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(BodyError::TooLarge { limit, decompressed: false }),
        Err(e) => return Err(BodyError::Read(e.to_string())),
    };
    if !gzip {
        return Ok(raw);
    }
    // Inflating up to 20 MiB is CPU work; keep it off the reactor threads.
    tokio::task::spawn_blocking(move || gunzip(&raw, limit))
        .await
        .map_err(|e| BodyError::Read(format!("decompression task failed: {e}")))?
}

/// Decompresses a gzip stream (several members allowed, as `cat a.gz b.gz` makes), stopping one byte past
/// `limit`.
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    decoder.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| BodyError::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit, decompressed: true });
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_is_limited_after_decompression() {
        assert_eq!(gunzip(&gzip(b"hello"), 5).unwrap(), Bytes::from_static(b"hello"));
        let bomb = gzip(&vec![0; 1 << 20]);
        assert!(bomb.len() < 2048, "{}", bomb.len());
        assert_eq!(gunzip(&bomb, 1000), Err(BodyError::TooLarge { limit: 1000, decompressed: true }));
        assert!(matches!(gunzip(b"not gzip", 100), Err(BodyError::Gzip(_))));
        let truncated = &gzip(b"hello world")[..10];
        assert!(matches!(gunzip(truncated, 100), Err(BodyError::Gzip(_))));
    }

    #[tokio::test]
    async fn bodies_are_limited_as_received() {
        let headers = HeaderMap::new();
        assert_eq!(read(&headers, Body::from("12345"), 5).await.unwrap(), "12345");
        assert_eq!(
            read(&headers, Body::from("123456"), 5).await,
            Err(BodyError::TooLarge { limit: 5, decompressed: false })
        );
        let mut br = HeaderMap::new();
        br.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(read(&br, Body::from("x"), 5).await, Err(BodyError::UnsupportedEncoding("br".into())));
    }
}
