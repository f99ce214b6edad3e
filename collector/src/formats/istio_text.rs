//! Istio's TEXT access-log encoding, every version: the 1.9+ default, `%UPSTREAM_CLUSTER%` instead of
//! `%UPSTREAM_CLUSTER_RAW%` (same shape), 1.1–1.8 with quoted fields instead of the response details, lines
//! without `%ROUTE_NAME%`, and lines whose trailing fields are cut off.

use super::text::{self, ISTIO_TAIL, Token};
use crate::error::ParseError;
use crate::normalize;
use meshlens_model::{RequestRecord, SourceFormat};

pub(crate) fn parse(line: &str) -> Result<RequestRecord, ParseError> {
    from_tokens(&text::tokenize(line)?)
}

pub(crate) fn from_tokens(tokens: &[Token<'_>]) -> Result<RequestRecord, ParseError> {
    let mut record = RequestRecord { source_format: SourceFormat::IstioText, ..Default::default() };
    text::apply_layout(tokens, ISTIO_TAIL, "Istio text", &mut record)?;
    normalize::derive(&mut record);
    Ok(record)
}
