//! Why a line did not become a record. Messages name the field and quote what was found; the caller adds
//! the file and line number.

use std::fmt;

/// The longest accepted line, without its terminator. Real access-log lines stay well under 4 KiB; the limit
/// keeps one runaway line (a binary file, a missing newline) from holding megabytes of memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The most fields accepted in one JSON object. Istio's JSON format has 24 and a meshlens record 38, so an
/// object with more is not an access-log entry, and the bound caps the work spent on one line.
pub const MAX_JSON_FIELDS: usize = 256;

/// Longest excerpt of offending input quoted in an error, so that a huge field does not flood stderr.
const EXCERPT_CHARS: usize = 60;

/// The field a [`ParseError`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRef {
    /// A text field by its 1-based position on the line: the bracketed time is field 1 and the quoted
    /// request line (`"GET /path HTTP/1.1"`) counts as one field.
    Position { index: usize, name: &'static str },
    /// A key of an Istio JSON entry.
    Key(&'static str),
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRef::Position { index, name } => write!(f, "field {index} ({name})"),
            FieldRef::Key(key) => write!(f, "field {key:?}"),
        }
    }
}

/// Why one line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line is {len} bytes long; the limit is {limit} bytes")]
    LineTooLong { len: usize, limit: usize },
    #[error("line is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("line is empty")]
    Empty,
    #[error(
        "cannot detect the format: expected a line starting with '[' (text access log) or '{{' (JSON), found {found:?}"
    )]
    UnknownFormat { found: char },
    #[error(
        "cannot detect the JSON format: expected \"start_time\" (Istio JSON) or \"timestamp\" with \"source_format\" \
         or \"mtls\" (meshlens JSON)"
    )]
    UnknownJsonFormat,
    #[error("{field} is missing")]
    Missing { field: FieldRef },
    /// `found` is the offending value, quoted and shortened.
    #[error("{field}: expected {expected}, found {found}")]
    Invalid { field: FieldRef, expected: &'static str, found: String },
    #[error("field {index}: unterminated {what}")]
    Unterminated { index: usize, what: &'static str },
    #[error("field {index}: unexpected extra field {found}; the {format} format has at most {max} fields")]
    ExtraField { index: usize, found: String, format: &'static str, max: usize },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("JSON object has more than {limit} fields")]
    TooManyFields { limit: usize },
    /// A meshlens JSON line that does not match the record schema; `path` is `.` for the object itself.
    #[error("invalid meshlens record: {}{reason}", at_path(path))]
    Record { path: String, reason: String },
}

fn at_path(path: &str) -> String {
    if path == "." { String::new() } else { format!("field {path:?}: ") }
}

/// Quotes `text` for an error message, cut to [`EXCERPT_CHARS`] characters.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_quote_the_value() {
        let err = ParseError::Invalid {
            field: FieldRef::Position { index: 10, name: "duration" },
            expected: "an integer",
            found: excerpt("abc"),
        };
        assert_eq!(err.to_string(), r#"field 10 (duration): expected an integer, found "abc""#);
        let err = ParseError::Missing { field: FieldRef::Key("start_time") };
        assert_eq!(err.to_string(), r#"field "start_time" is missing"#);
        let err = ParseError::Record { path: "status".into(), reason: "invalid type".into() };
        assert_eq!(err.to_string(), r#"invalid meshlens record: field "status": invalid type"#);
        let err = ParseError::Record { path: ".".into(), reason: "missing field `timestamp`".into() };
        assert_eq!(err.to_string(), "invalid meshlens record: missing field `timestamp`");
    }

    #[test]
    fn long_values_are_shortened_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let quoted = excerpt(&long);
        assert!(quoted.starts_with(&format!("\"{}", "é".repeat(EXCERPT_CHARS))), "{quoted}");
        assert!(quoted.ends_with("... (2000 bytes)"), "{quoted}");
    }
}
