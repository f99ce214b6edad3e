//! gRPC status codes as the OTLP specification wants them, where tonic's defaults differ.

use crate::ingest::IngestError;
use envoy_types::pb::google::protobuf::{Any, Duration};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tonic::{Code, Status};

/// `google.rpc.RetryInfo`, which neither envoy-types nor opentelemetry-proto ship.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<Duration>,
}

/// `UNAVAILABLE` with a `RetryInfo` detail: OTLP exporters retry `UNAVAILABLE`, and wait the given delay.
pub fn unavailable(error: &IngestError) -> Status {
    let message = format!("cannot store the data now, retry later: {}", error.source);
    let delay = Duration {
        seconds: i64::try_from(error.retry_after.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(error.retry_after.subsec_nanos()).unwrap_or(0),
    };
    let detail = Any {
        type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
        value: RetryInfo { retry_delay: Some(delay) }.encode_to_vec(),
    };
    let status = RpcStatus { code: Code::Unavailable as i32, message: message.clone(), details: vec![detail] };
    Status::with_details(Code::Unavailable, message, status.encode_to_vec().into())
}

/// Corrects the codes tonic answers before a handler runs: an undecodable message is `INTERNAL` in tonic
/// (gRPC's own convention) but `INVALID_ARGUMENT` in OTLP, which tells the client not to retry; a message
/// over the size limit is `OUT_OF_RANGE` in tonic but `RESOURCE_EXHAUSTED` in OTLP. Only trailers-only
/// responses (status in the headers) come from tonic's decoder, so only those are looked at.
pub fn fix_decode_status<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else { return response };
    let code = match status.code() {
        Code::Internal if status.message().starts_with("failed to decode Protobuf message") => Code::InvalidArgument,
        Code::OutOfRange if status.message().starts_with("Error, decoded message length too large") => {
            Code::ResourceExhausted
        }
        _ => return response,
    };
    let fixed = Status::new(code, status.message());
    // Re-encoding a status we just decoded from valid headers cannot fail; keep the original if it does.
    if fixed.add_header(response.headers_mut()).is_err() {
        tracing::debug!("could not rewrite a gRPC status header");
    }
    response
}

/// Maps an error from reading a client stream (ALS): decode errors are the client's fault.
pub fn stream_error(status: Status) -> Status {
    match status.code() {
        Code::Internal if status.message().starts_with("failed to decode Protobuf message") => {
            Status::invalid_argument(status.message())
        }
        Code::OutOfRange => Status::resource_exhausted(status.message()),
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_become_invalid_argument_and_size_errors_resource_exhausted() {
        let response: http::Response<()> = Status::internal("failed to decode Protobuf message: x").into_http();
        let fixed = fix_decode_status(response);
        assert_eq!(Status::from_header_map(fixed.headers()).unwrap().code(), Code::InvalidArgument);
        let response: http::Response<()> =
            Status::out_of_range("Error, decoded message length too large: found 9 bytes").into_http();
        assert_eq!(
            Status::from_header_map(fix_decode_status(response).headers()).unwrap().code(),
            Code::ResourceExhausted
        );
        let response: http::Response<()> = Status::internal("something else").into_http();
        assert_eq!(Status::from_header_map(fix_decode_status(response).headers()).unwrap().code(), Code::Internal);
    }

    #[test]
    fn unavailable_carries_retry_info() {
        let error = IngestError {
            retry_after: std::time::Duration::from_secs(1),
            source: meshlens_store::StoreError::Busy { requested: 1, in_use: 2, budget: 2 },
        };
        let status = unavailable(&error);
        assert_eq!(status.code(), Code::Unavailable);
        let details = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
        let info = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(info.retry_delay.unwrap().seconds, 1);
    }
}
