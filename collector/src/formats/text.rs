//! The tokenizer and field layouts shared by the text formats (Istio text, Envoy's default).
//!
//! A line is a bracketed start time followed by space-separated fields, some of them in double quotes.
//! Envoy does not escape quotes inside quoted values (a user agent may contain `"`), so a quoted field ends
//! at a `"` that is followed by a space or the end of the line.

use super::field::{Field, Quoting};
use crate::error::{FieldRef, ParseError, excerpt};
use meshlens_model::RequestRecord;

/// One field of a text line, without its brackets or quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub quoting: Quoting,
    pub text: &'a str,
}

fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits `line` into fields. Fails only on an unterminated bracket or quote; whether the fields make sense
/// is up to the layout.
pub(crate) fn tokenize(line: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let bytes = line.as_bytes();
    let mut tokens = Vec::with_capacity(FULL_ISTIO_FIELDS);
    let mut pos = skip_separators(bytes, 0);
    while pos < bytes.len() {
        let index = tokens.len() + 1;
        // Only ASCII delimiters are searched for, so every slice boundary is a char boundary.
        let (token, end) = match bytes[pos] {
            b'[' if tokens.is_empty() => {
                let close = memchr::memchr(b']', &bytes[pos..])
                    .ok_or(ParseError::Unterminated { index, what: "bracketed time" })?;
                (Token { quoting: Quoting::Bracketed, text: &line[pos + 1..pos + close] }, pos + close + 1)
            }
            b'"' => {
                let close =
                    closing_quote(bytes, pos + 1).ok_or(ParseError::Unterminated { index, what: "quoted string" })?;
                (Token { quoting: Quoting::Quoted, text: &line[pos + 1..close] }, close + 1)
            }
            _ => {
                let end = memchr::memchr2(b' ', b'\t', &bytes[pos..]).map_or(bytes.len(), |n| pos + n);
                (Token { quoting: Quoting::Bare, text: &line[pos..end] }, end)
            }
        };
        tokens.push(token);
        pos = skip_separators(bytes, end);
    }
    Ok(tokens)
}

fn skip_separators(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).copied().is_some_and(is_separator) {
        pos += 1;
    }
    pos
}

/// The position of the `"` that closes a quoted field whose content starts at `from`.
fn closing_quote(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let quote = from + memchr::memchr(b'"', &bytes[from..])?;
        if bytes.get(quote + 1).is_none_or(|&b| is_separator(b)) {
            return Some(quote);
        }
        from = quote + 1;
    }
}

/// Fields every text format starts with.
const HEAD: &[Field] = &[Field::StartTime, Field::RequestLine, Field::ResponseCode, Field::ResponseFlags];

/// The fields up to here must be present; later ones may be cut off (custom or truncated formats).
const REQUIRED_FIELDS: usize = 3;

/// Envoy ≥ 1.16 and Istio ≥ 1.9 log these after the flags.
const DETAILS: &[Field] =
    &[Field::ResponseCodeDetails, Field::ConnectionTerminationDetails, Field::UpstreamTransportFailureReason];
/// Istio 1.1–1.8 log the mixer status and/or the transport failure reason after the flags, depending on the
/// release. Neither is recorded, so one quoted field is given the later name.
const ONE_QUOTED: &[Field] = &[Field::UpstreamTransportFailureReason];
/// Releases that log both write the mixer status first.
const TWO_QUOTED: &[Field] = &[Field::MixerStatus, Field::UpstreamTransportFailureReason];

/// Envoy's default format ends after these.
const ENVOY_BODY: &[Field] = &[
    Field::BytesReceived,
    Field::BytesSent,
    Field::Duration,
    Field::UpstreamServiceTime,
    Field::XForwardedFor,
    Field::UserAgent,
    Field::RequestId,
    Field::Authority,
    Field::UpstreamHost,
];

/// Istio appends these to Envoy's fields.
pub(crate) const ISTIO_TAIL: &[Field] = &[
    Field::UpstreamCluster,
    Field::UpstreamLocalAddress,
    Field::DownstreamLocalAddress,
    Field::DownstreamRemoteAddress,
    Field::RequestedServerName,
    Field::RouteName,
];

const FULL_ISTIO_FIELDS: usize = HEAD.len() + DETAILS.len() + ENVOY_BODY.len() + ISTIO_TAIL.len();

/// The fields between the response flags and the byte counts, told apart by the shape of the first token
/// after the flags: a number is already `%BYTES_RECEIVED%` (Envoy < 1.16, Istio ≤ 1.0), a quoted string is
/// one of Istio 1.1–1.8's quoted fields, and a bare word is `%RESPONSE_CODE_DETAILS%` (Envoy ≥ 1.16, Istio
/// ≥ 1.9).
fn middle(tokens: &[Token<'_>]) -> &'static [Field] {
    let after_flags = &tokens[tokens.len().min(HEAD.len())..];
    match after_flags {
        [first, second, ..] if first.quoting == Quoting::Quoted && second.quoting == Quoting::Quoted => TWO_QUOTED,
        [first, ..] if first.quoting == Quoting::Quoted => ONE_QUOTED,
        // The quoted transport failure reason two fields on confirms it (unless the line ends first), so
        // that a malformed byte count is reported as such rather than as a misplaced detail.
        [first, rest @ ..]
            if !first.text.bytes().all(|b| b.is_ascii_digit())
                && rest.get(1).is_none_or(|t| t.quoting == Quoting::Quoted) =>
        {
            DETAILS
        }
        _ => &[],
    }
}

/// Whether the line ends exactly at Envoy's last default field, the quoted upstream host. (An Istio line cut
/// off at the same place is indistinguishable, and parses the same.)
pub(crate) fn ends_at_upstream_host(tokens: &[Token<'_>]) -> bool {
    tokens.len() == HEAD.len() + middle(tokens).len() + ENVOY_BODY.len()
        && tokens.last().is_some_and(|t| t.quoting == Quoting::Quoted)
}

/// Fills `record` from `tokens` laid out as Envoy's fields followed by `tail`. `format` names the format in
/// errors.
pub(crate) fn apply_layout(
    tokens: &[Token<'_>],
    tail: &[Field],
    format: &'static str,
    record: &mut RequestRecord,
) -> Result<(), ParseError> {
    let middle = middle(tokens);
    let mut layout = HEAD.iter().chain(middle).chain(ENVOY_BODY).chain(tail).copied();
    for (i, token) in tokens.iter().enumerate() {
        let index = i + 1;
        let Some(field) = layout.next() else {
            let max = HEAD.len() + middle.len() + ENVOY_BODY.len() + tail.len();
            return Err(ParseError::ExtraField { index, found: excerpt(token.text), format, max });
        };
        let invalid = |expected, found| ParseError::Invalid {
            field: FieldRef::Position { index, name: field.name() },
            expected,
            found,
        };
        if token.quoting != field.quoting() {
            return Err(invalid(quoting_expected(field.quoting()), as_written(token)));
        }
        field.apply(token.text, record).map_err(|expected| invalid(expected, excerpt(token.text)))?;
    }
    if let Some(field) = HEAD[..REQUIRED_FIELDS].get(tokens.len()) {
        let field = FieldRef::Position { index: tokens.len() + 1, name: field.name() };
        return Err(ParseError::Missing { field });
    }
    Ok(())
}

fn quoting_expected(quoting: Quoting) -> &'static str {
    match quoting {
        Quoting::Bracketed => "a bracketed time like [2024-05-01T12:00:00.000Z]",
        Quoting::Quoted => "a quoted string",
        Quoting::Bare => "an unquoted value",
    }
}

/// The token as it appeared on the line, so that a quoting mismatch is visible in the message.
fn as_written(token: &Token<'_>) -> String {
    match token.quoting {
        Quoting::Bare => excerpt(token.text),
        Quoting::Quoted => excerpt(&format!("\"{}\"", token.text)),
        Quoting::Bracketed => excerpt(&format!("[{}]", token.text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<(Quoting, &str)> {
        tokenize(line).unwrap().into_iter().map(|t| (t.quoting, t.text)).collect()
    }

    #[test]
    fn splits_brackets_quotes_and_words() {
        use Quoting::*;
        assert_eq!(
            texts("  [t 1] \"GET / HTTP/1.1\" 200  -\t\"\" x "),
            [(Bracketed, "t 1"), (Quoted, "GET / HTTP/1.1"), (Bare, "200"), (Bare, "-"), (Quoted, ""), (Bare, "x")]
        );
    }

    #[test]
    fn quotes_inside_quoted_values_are_kept() {
        assert_eq!(texts(r#""curl "a"b" y"#), [(Quoting::Quoted, r#"curl "a"b"#), (Quoting::Bare, "y")]);
    }

    #[test]
    fn brackets_count_only_as_the_first_field() {
        assert_eq!(texts("a [b]"), [(Quoting::Bare, "a"), (Quoting::Bare, "[b]")]);
    }

    #[test]
    fn unterminated_fields_are_errors() {
        assert_eq!(tokenize("[2024").unwrap_err(), ParseError::Unterminated { index: 1, what: "bracketed time" });
        assert_eq!(tokenize("[t] \"GET /").unwrap_err(), ParseError::Unterminated { index: 2, what: "quoted string" });
        assert_eq!(tokenize("[t] \"a\"b").unwrap_err(), ParseError::Unterminated { index: 2, what: "quoted string" });
    }

    #[test]
    fn middle_fields_are_told_apart_by_shape() {
        let fields = |line: &str| middle(&tokenize(line).unwrap());
        assert_eq!(fields("[t] \"r\" 200 - via_upstream - \"-\" 0"), DETAILS);
        assert_eq!(fields("[t] \"r\" 200 - \"-\" 0"), ONE_QUOTED);
        assert_eq!(fields("[t] \"r\" 200 - \"ok\" \"-\" 0"), TWO_QUOTED);
        assert_eq!(fields("[t] \"r\" 200 - via_upstream"), DETAILS);
        assert_eq!(fields("[t] \"r\" 200 - 0 12"), &[] as &[Field]);
        assert_eq!(fields("[t] \"r\" 200 - -1 0 12"), &[] as &[Field]);
        assert_eq!(fields("[t] \"r\" 200"), &[] as &[Field]);
    }
}
