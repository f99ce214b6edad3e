//! Splitting a byte stream into lines without trusting it: a line longer than [`MAX_LINE_BYTES`] is
//! skipped (and reported) without being held in memory, and bytes are handed out undecoded so that invalid
//! UTF-8 fails one line, not the stream.

use crate::error::{MAX_LINE_BYTES, ParseError};
use std::io::{self, BufRead};

/// Reads `\n`- or `\r\n`-terminated lines from a [`BufRead`].
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    line_number: u64,
}

/// One line: its 1-based number, and its bytes without the terminator or why it was skipped.
pub type Line<'a> = (u64, Result<&'a [u8], ParseError>);

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, buf: Vec::new(), line_number: 0 }
    }

    /// The next line, or `None` at the end of the input. I/O errors end the stream; a too-long line does not.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let Some(len) = self.fill_line()? else { return Ok(None) };
        self.line_number += 1;
        if self.buf.last() == Some(&b'\r') && len <= MAX_LINE_BYTES + 1 {
            self.buf.pop();
        }
        if self.buf.len() > MAX_LINE_BYTES {
            return Ok(Some((self.line_number, Err(ParseError::LineTooLong { len, limit: MAX_LINE_BYTES }))));
        }
        Ok(Some((self.line_number, Ok(&self.buf))))
    }

    /// Copies the next line into `buf`, keeping at most one byte beyond the limit (enough to know it was
    /// exceeded). Returns the line's full length, or `None` at the end of the input.
    fn fill_line(&mut self) -> io::Result<Option<usize>> {
        let mut len = 0;
        let mut read_any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if available.is_empty() {
                return Ok(read_any.then_some(len));
            }
            read_any = true;
            let newline = memchr::memchr(b'\n', available);
            let chunk = &available[..newline.unwrap_or(available.len())];
            let room = (MAX_LINE_BYTES + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            len += chunk.len();
            let consumed = newline.map_or(chunk.len(), |n| n + 1);
            self.inner.consume(consumed);
            if newline.is_some() {
                return Ok(Some(len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<(u64, Result<Vec<u8>, ParseError>)> {
        // A tiny buffer so that lines straddle refills.
        let mut reader = LineReader::new(io::BufReader::with_capacity(7, input));
        let mut out = Vec::new();
        while let Some((number, line)) = reader.next_line().unwrap() {
            out.push((number, line.map(<[u8]>::to_vec)));
        }
        out
    }

    #[test]
    fn splits_on_newlines_and_strips_carriage_returns() {
        let got = lines(b"first line\r\n\nsecond \xff line\nlast");
        let want: Vec<(u64, Result<Vec<u8>, ParseError>)> = vec![
            (1, Ok(b"first line".to_vec())),
            (2, Ok(vec![])),
            (3, Ok(b"second \xff line".to_vec())),
            (4, Ok(b"last".to_vec())),
        ];
        assert_eq!(got, want);
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn overlong_lines_are_reported_and_skipped() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nok\n");
        let got = lines(&input);
        assert_eq!(got[0], (1, Err(ParseError::LineTooLong { len: MAX_LINE_BYTES + 10, limit: MAX_LINE_BYTES })));
        assert_eq!(got[1], (2, Ok(b"ok".to_vec())));
    }

    #[test]
    fn the_limit_excludes_the_terminator() {
        let mut input = vec![b'x'; MAX_LINE_BYTES];
        input.extend_from_slice(b"\r\n");
        assert_eq!(lines(&input)[0].1.as_ref().map(Vec::len), Ok(MAX_LINE_BYTES));
    }
}
