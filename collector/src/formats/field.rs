//! Envoy access-log command operators (`%DURATION%`, `%UPSTREAM_CLUSTER%`, ...) and how each one's value
//! lands in a [`RequestRecord`]. Shared by the text formats (one token per operator) and Istio JSON (one key
//! per operator), so that `"-"`, `""`, status `0` and flag lists mean the same everywhere.

use chrono::{DateTime, Utc};
use meshlens_model::RequestRecord;

/// One operator of an Envoy/Istio access-log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    StartTime,
    /// The text formats' `"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"`.
    RequestLine,
    Method,
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    /// `%DYNAMIC_METADATA(istio.mixer:status)%`, written by Istio 1.1–1.4.
    MixerStatus,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamServiceTime,
    XForwardedFor,
    UserAgent,
    RequestId,
    Authority,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    RequestedServerName,
    RouteName,
}

/// How a text format writes a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quoting {
    Bracketed,
    Quoted,
    Bare,
}

impl Field {
    /// The field's name in Istio's JSON format, also used in error messages for the text formats.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::StartTime => "start_time",
            Field::RequestLine => "request",
            Field::Method => "method",
            Field::Path => "path",
            Field::Protocol => "protocol",
            Field::ResponseCode => "response_code",
            Field::ResponseFlags => "response_flags",
            Field::ResponseCodeDetails => "response_code_details",
            Field::ConnectionTerminationDetails => "connection_termination_details",
            Field::MixerStatus => "mixer_status",
            Field::UpstreamTransportFailureReason => "upstream_transport_failure_reason",
            Field::BytesReceived => "bytes_received",
            Field::BytesSent => "bytes_sent",
            Field::Duration => "duration",
            Field::UpstreamServiceTime => "upstream_service_time",
            Field::XForwardedFor => "x_forwarded_for",
            Field::UserAgent => "user_agent",
            Field::RequestId => "request_id",
            Field::Authority => "authority",
            Field::UpstreamHost => "upstream_host",
            Field::UpstreamCluster => "upstream_cluster",
            Field::UpstreamLocalAddress => "upstream_local_address",
            Field::DownstreamLocalAddress => "downstream_local_address",
            Field::DownstreamRemoteAddress => "downstream_remote_address",
            Field::RequestedServerName => "requested_server_name",
            Field::RouteName => "route_name",
        }
    }

    /// How Envoy's and Istio's text formats write the field: free-form values (headers, the request line,
    /// the upstream host) are quoted, Envoy-generated ones are not.
    pub(crate) fn quoting(self) -> Quoting {
        match self {
            Field::StartTime => Quoting::Bracketed,
            Field::RequestLine
            | Field::MixerStatus
            | Field::UpstreamTransportFailureReason
            | Field::XForwardedFor
            | Field::UserAgent
            | Field::RequestId
            | Field::Authority
            | Field::UpstreamHost => Quoting::Quoted,
            _ => Quoting::Bare,
        }
    }

    /// Stores `value` (the operator's output, `-` or empty when absent) in `record`. On failure returns what
    /// was expected, for the error message.
    pub(crate) fn apply(self, value: &str, record: &mut RequestRecord) -> Result<(), &'static str> {
        let Some(value) = present(value) else {
            // Any field may be absent except the start time: a record cannot lack its timestamp.
            return if self == Field::StartTime { Err(TIMESTAMP) } else { Ok(()) };
        };
        let text = || Some(value.to_owned());
        match self {
            Field::StartTime => record.timestamp = parse_timestamp(value)?,
            Field::RequestLine => apply_request_line(value, record)?,
            Field::Method => record.method = text(),
            Field::Path => record.path = text(),
            Field::Protocol => record.protocol = text(),
            Field::ResponseCode => record.status = parse_status(value)?,
            Field::ResponseFlags => record.response_flags = parse_flags(value)?,
            Field::ResponseCodeDetails => record.response_code_details = text(),
            Field::BytesReceived => record.bytes_received = Some(parse_integer(value)?),
            Field::BytesSent => record.bytes_sent = Some(parse_integer(value)?),
            Field::Duration => record.duration_ms = Some(parse_integer(value)?),
            Field::UpstreamServiceTime => record.upstream_service_time_ms = Some(parse_integer(value)?),
            Field::XForwardedFor => record.x_forwarded_for = text(),
            Field::UserAgent => record.user_agent = text(),
            Field::RequestId => record.request_id = text(),
            Field::Authority => record.authority = text(),
            Field::UpstreamHost => record.upstream_host = text(),
            Field::UpstreamCluster => record.upstream_cluster = text(),
            Field::DownstreamLocalAddress => record.downstream_local_address = text(),
            Field::DownstreamRemoteAddress => record.downstream_remote_address = text(),
            Field::RequestedServerName => record.requested_server_name = text(),
            Field::RouteName => record.route_name = text(),
            // Logged by Istio but not part of the record: checked for shape only by the tokenizer.
            Field::ConnectionTerminationDetails
            | Field::MixerStatus
            | Field::UpstreamTransportFailureReason
            | Field::UpstreamLocalAddress => {}
        }
        Ok(())
    }
}

/// Envoy writes `-` for an absent value; an empty value (an empty header, JSON `""`) carries nothing either.
fn present(value: &str) -> Option<&str> {
    (!value.is_empty() && value != "-").then_some(value)
}

const TIMESTAMP: &str = "an RFC 3339 timestamp";

fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, &'static str> {
    DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc)).map_err(|_| TIMESTAMP)
}

/// `METHOD PATH PROTOCOL`; the path is everything between the first and the last space so that a path with a
/// stray space still parses. TCP entries log `- - -`.
fn apply_request_line(value: &str, record: &mut RequestRecord) -> Result<(), &'static str> {
    const EXPECTED: &str = "a request line \"METHOD PATH PROTOCOL\"";
    let (method, rest) = value.split_once(' ').ok_or(EXPECTED)?;
    let (path, protocol) = rest.rsplit_once(' ').ok_or(EXPECTED)?;
    record.method = present(method).map(str::to_owned);
    record.path = present(path).map(str::to_owned);
    record.protocol = present(protocol).map(str::to_owned);
    Ok(())
}

/// Digits only: `u64::from_str` would also take a leading `+`, which Envoy never writes.
fn parse_integer(value: &str) -> Result<u64, &'static str> {
    const EXPECTED: &str = "an integer";
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EXPECTED);
    }
    value.parse().map_err(|_| EXPECTED)
}

/// Envoy logs `0` when no response was sent; the record says `None`.
fn parse_status(value: &str) -> Result<Option<u16>, &'static str> {
    const EXPECTED: &str = "an HTTP status code";
    match parse_integer(value).map_err(|_| EXPECTED)? {
        0 => Ok(None),
        code @ 1..=999 => Ok(Some(code as u16)),
        _ => Err(EXPECTED),
    }
}

/// `UO` or `UF,URX`. Flags are short upper-case codes, so anything else means the line is not laid out the
/// way the format says (for example a details string where the flags belong).
fn parse_flags(value: &str) -> Result<Vec<String>, &'static str> {
    value
        .split(',')
        .map(|flag| {
            let valid = !flag.is_empty() && flag.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if valid { Ok(flag.to_owned()) } else { Err("response flags such as UH or UF,URX, or -") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(field: Field, value: &str) -> Result<RequestRecord, &'static str> {
        let mut record = RequestRecord::default();
        field.apply(value, &mut record).map(|()| record)
    }

    #[test]
    fn dash_and_empty_mean_absent() {
        for value in ["-", ""] {
            assert_eq!(applied(Field::UserAgent, value).unwrap().user_agent, None);
            assert_eq!(applied(Field::Duration, value).unwrap().duration_ms, None);
            assert!(applied(Field::ResponseFlags, value).unwrap().response_flags.is_empty());
        }
    }

    #[test]
    fn status_zero_means_no_response() {
        assert_eq!(applied(Field::ResponseCode, "0").unwrap().status, None);
        assert_eq!(applied(Field::ResponseCode, "503").unwrap().status, Some(503));
        for bad in ["5o3", "1000", "+200", "-1", "99999999999999999999999"] {
            assert_eq!(applied(Field::ResponseCode, bad).unwrap_err(), "an HTTP status code", "{bad}");
        }
    }

    #[test]
    fn flags_split_on_commas() {
        assert_eq!(applied(Field::ResponseFlags, "UF,URX").unwrap().response_flags, ["UF", "URX"]);
        for bad in ["via_upstream", "UF,", ",UF", "uf"] {
            assert!(applied(Field::ResponseFlags, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_line_splits_into_method_path_protocol() {
        let record = applied(Field::RequestLine, "GET /a b HTTP/1.1").unwrap();
        assert_eq!(
            (record.method.as_deref(), record.path.as_deref(), record.protocol.as_deref()),
            (Some("GET"), Some("/a b"), Some("HTTP/1.1"))
        );
        let tcp = applied(Field::RequestLine, "- - -").unwrap();
        assert_eq!((tcp.method, tcp.path, tcp.protocol), (None, None, None));
        assert!(applied(Field::RequestLine, "GET /").is_err());
    }

    #[test]
    fn start_time_is_required_and_converted_to_utc() {
        let record = applied(Field::StartTime, "2024-01-02T03:04:05.678+02:00").unwrap();
        assert_eq!(record.timestamp.to_rfc3339(), "2024-01-02T01:04:05.678+00:00");
        for bad in ["-", "", "2024-13-02T03:04:05Z", "yesterday"] {
            assert_eq!(applied(Field::StartTime, bad).unwrap_err(), "an RFC 3339 timestamp", "{bad}");
        }
    }
}
