//! meshlens' own proxy JSON: the [`RequestRecord`]'s serde form, already normalized by the proxy (which
//! knows the peer identity and TLS state first-hand), so it is taken as is.

use crate::error::ParseError;
use meshlens_model::RequestRecord;
use serde_json::{Map, Value};

pub(crate) fn parse(line: &str) -> Result<RequestRecord, ParseError> {
    from_object(super::json::read_object(line)?)
}

/// Whether auto-detection should read `object` as a meshlens record: it has the record's `timestamp` and
/// one of the fields only a record has.
pub(crate) fn matches(object: &Map<String, Value>) -> bool {
    object.contains_key("timestamp") && (object.contains_key("source_format") || object.contains_key("mtls"))
}

pub(crate) fn from_object(object: Map<String, Value>) -> Result<RequestRecord, ParseError> {
    serde_path_to_error::deserialize(Value::Object(object))
        .map_err(|err| ParseError::Record { path: err.path().to_string(), reason: err.inner().to_string() })
}
