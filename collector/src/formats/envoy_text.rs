//! Envoy's built-in default text format, which ends at `"%UPSTREAM_HOST%"`: with or without the response
//! details fields Envoy 1.16 added after the flags.

use super::text::{self, Token};
use crate::error::ParseError;
use crate::normalize;
use meshlens_model::{RequestRecord, SourceFormat};

pub(crate) fn parse(line: &str) -> Result<RequestRecord, ParseError> {
    from_tokens(&text::tokenize(line)?)
}

/// Whether auto-detection should read `tokens` as Envoy's default format rather than Istio's.
pub(crate) fn matches(tokens: &[Token<'_>]) -> bool {
    text::ends_at_upstream_host(tokens)
}

pub(crate) fn from_tokens(tokens: &[Token<'_>]) -> Result<RequestRecord, ParseError> {
    let mut record = RequestRecord { source_format: SourceFormat::EnvoyText, ..Default::default() };
    text::apply_layout(tokens, &[], "Envoy text", &mut record)?;
    // Envoy's default format logs no cluster or SNI, so the rules leave direction, reporter and mTLS
    // unknown; they still run so that every format is normalized by the same code.
    normalize::derive(&mut record);
    Ok(record)
}
