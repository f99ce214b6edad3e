//! Access-log line formats, one module per format with the same shape (`parse`, and for auto-detection
//! `matches` plus `from_tokens`/`from_object`), all producing a normalized [`RequestRecord`].
//!
//! | format          | module          | first byte | told apart by                                        |
//! |-----------------|-----------------|------------|------------------------------------------------------|
//! | `istio-text`    | `istio_text`    | `[`        | fields after `"%UPSTREAM_HOST%"` (cluster, SNI, ...) |
//! | `envoy-text`    | `envoy_text`    | `[`        | the line ends at the quoted `"%UPSTREAM_HOST%"`      |
//! | `istio-json`    | `istio_json`    | `{`        | has `start_time`                                     |
//! | `meshlens-json` | `meshlens_json` | `{`        | has `timestamp` and `source_format` or `mtls`        |

mod envoy_text;
mod field;
mod istio_json;
mod istio_text;
mod json;
mod meshlens_json;
mod text;

use crate::error::{MAX_LINE_BYTES, ParseError};
use meshlens_model::{Reporter, RequestRecord};
use std::fmt;
use std::str::FromStr;

/// Which format to read lines as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LineFormat {
    /// Decide per line, from the first byte and the shape of the fields.
    #[default]
    Auto,
    /// Istio's TEXT encoding, any version.
    IstioText,
    /// Istio's JSON encoding.
    IstioJson,
    /// Envoy's built-in default text format.
    EnvoyText,
    /// meshlens' own proxy JSON (the record's serde form).
    MeshlensJson,
}

impl LineFormat {
    pub const ALL: [LineFormat; 5] = [
        LineFormat::Auto,
        LineFormat::IstioText,
        LineFormat::IstioJson,
        LineFormat::EnvoyText,
        LineFormat::MeshlensJson,
    ];

    /// The name used on the command line (`--format istio-text`).
    pub fn as_str(self) -> &'static str {
        match self {
            LineFormat::Auto => "auto",
            LineFormat::IstioText => "istio-text",
            LineFormat::IstioJson => "istio-json",
            LineFormat::EnvoyText => "envoy-text",
            LineFormat::MeshlensJson => "meshlens-json",
        }
    }

    /// A one-line description, for help texts.
    pub fn description(self) -> &'static str {
        match self {
            LineFormat::Auto => "detect the format of each line",
            LineFormat::IstioText => "Istio TEXT access log (any version)",
            LineFormat::IstioJson => "Istio JSON access log",
            LineFormat::EnvoyText => "Envoy's default text access log",
            LineFormat::MeshlensJson => "meshlens proxy JSON records",
        }
    }
}

impl fmt::Display for LineFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`LineFormat`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (expected auto, istio-text, istio-json, envoy-text or meshlens-json)")]
pub struct UnknownLineFormat(pub String);

impl FromStr for LineFormat {
    type Err = UnknownLineFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LineFormat::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| UnknownLineFormat(s.to_owned()))
    }
}

#[cfg(feature = "clap")]
impl clap::ValueEnum for LineFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &LineFormat::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()).help(self.description()))
    }
}

/// Parses lines in one format, optionally overriding the reporter the normalization rules derive (for
/// example `Gateway` for a log known to come from an ingress gateway, whose records look like a client
/// sidecar's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineParser {
    pub format: LineFormat,
    pub reporter: Option<Reporter>,
}

impl LineParser {
    pub fn new(format: LineFormat) -> Self {
        Self { format, reporter: None }
    }

    /// Sets the reporter of every record instead of deriving it from the direction.
    pub fn with_reporter(self, reporter: Reporter) -> Self {
        Self { reporter: Some(reporter), ..self }
    }

    /// Parses one line (with or without its line terminator; surrounding whitespace is ignored).
    pub fn parse(&self, line: &str) -> Result<RequestRecord, ParseError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(ParseError::LineTooLong { len: line.len(), limit: MAX_LINE_BYTES });
        }
        let line = line.trim();
        if line.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut record = match self.format {
            LineFormat::Auto => parse_detected(line),
            LineFormat::IstioText => istio_text::parse(line),
            LineFormat::IstioJson => istio_json::parse(line),
            LineFormat::EnvoyText => envoy_text::parse(line),
            LineFormat::MeshlensJson => meshlens_json::parse(line),
        }?;
        if let Some(reporter) = self.reporter {
            record.reporter = reporter;
        }
        Ok(record)
    }

    /// Parses one line of raw bytes: too long and invalid UTF-8 are errors for this line only.
    pub fn parse_bytes(&self, line: &[u8]) -> Result<RequestRecord, ParseError> {
        // Checked before decoding so that a huge binary line reports its size, not its first bad byte.
        if line.len() > MAX_LINE_BYTES {
            return Err(ParseError::LineTooLong { len: line.len(), limit: MAX_LINE_BYTES });
        }
        let line = std::str::from_utf8(line).map_err(|err| ParseError::InvalidUtf8 { offset: err.valid_up_to() })?;
        self.parse(line)
    }
}

/// Parses one line in `format` (see [`LineParser::parse`]).
pub fn parse_line(line: &str, format: LineFormat) -> Result<RequestRecord, ParseError> {
    LineParser::new(format).parse(line)
}

/// Parses one line of raw bytes in `format` (see [`LineParser::parse_bytes`]).
pub fn parse_bytes(line: &[u8], format: LineFormat) -> Result<RequestRecord, ParseError> {
    LineParser::new(format).parse_bytes(line)
}

/// Auto-detection: the first byte picks text or JSON, then the fields pick the format. Each line is
/// tokenized or decoded once, whichever format it turns out to be.
fn parse_detected(line: &str) -> Result<RequestRecord, ParseError> {
    match line.chars().next() {
        Some('[') => {
            let tokens = text::tokenize(line)?;
            if envoy_text::matches(&tokens) {
                envoy_text::from_tokens(&tokens)
            } else {
                istio_text::from_tokens(&tokens)
            }
        }
        Some('{') => {
            let object = json::read_object(line)?;
            if istio_json::matches(&object) {
                istio_json::from_object(&object)
            } else if meshlens_json::matches(&object) {
                meshlens_json::from_object(object)
            } else {
                Err(ParseError::UnknownJsonFormat)
            }
        }
        Some(found) => Err(ParseError::UnknownFormat { found }),
        None => Err(ParseError::Empty),
    }
}
