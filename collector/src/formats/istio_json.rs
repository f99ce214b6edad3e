//! Istio's JSON access-log encoding (`EnvoyJSONLogFormatIstio`): one flat object per line whose keys are the
//! operators' names. Values may be `null`, `""` or `"-"` (absent), and numbers may be written as strings.

use super::field::Field;
use crate::error::{FieldRef, ParseError, excerpt};
use crate::normalize;
use meshlens_model::{RequestRecord, SourceFormat};
use serde_json::{Map, Value};

/// The keys read; others (custom additions) are ignored.
const FIELDS: &[Field] = &[
    Field::StartTime,
    Field::Method,
    Field::Path,
    Field::Protocol,
    Field::ResponseCode,
    Field::ResponseFlags,
    Field::ResponseCodeDetails,
    Field::ConnectionTerminationDetails,
    Field::UpstreamTransportFailureReason,
    Field::BytesReceived,
    Field::BytesSent,
    Field::Duration,
    Field::UpstreamServiceTime,
    Field::XForwardedFor,
    Field::UserAgent,
    Field::RequestId,
    Field::Authority,
    Field::UpstreamHost,
    Field::UpstreamCluster,
    Field::UpstreamLocalAddress,
    Field::DownstreamLocalAddress,
    Field::DownstreamRemoteAddress,
    Field::RequestedServerName,
    Field::RouteName,
];

pub(crate) fn parse(line: &str) -> Result<RequestRecord, ParseError> {
    from_object(&super::json::read_object(line)?)
}

/// Whether auto-detection should read `object` as an Istio entry.
pub(crate) fn matches(object: &Map<String, Value>) -> bool {
    object.contains_key(Field::StartTime.name())
}

pub(crate) fn from_object(object: &Map<String, Value>) -> Result<RequestRecord, ParseError> {
    let mut record = RequestRecord { source_format: SourceFormat::IstioJson, ..Default::default() };
    for &field in FIELDS {
        apply(field, object.get(field.name()), &mut record)?;
    }
    normalize::derive(&mut record);
    Ok(record)
}

fn apply(field: Field, value: Option<&Value>, record: &mut RequestRecord) -> Result<(), ParseError> {
    let key = FieldRef::Key(field.name());
    let number;
    let text = match value {
        None | Some(Value::Null) if field == Field::StartTime => return Err(ParseError::Missing { field: key }),
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(text)) => text.as_str(),
        // Envoy's JSON formatter writes counters as numbers; the operator parsers take their text form.
        Some(Value::Number(n)) => {
            number = n.to_string();
            &number
        }
        Some(other) => {
            let found = excerpt(&other.to_string());
            return Err(ParseError::Invalid { field: key, expected: "a string or a number", found });
        }
    };
    field.apply(text, record).map_err(|expected| ParseError::Invalid { field: key, expected, found: excerpt(text) })
}
