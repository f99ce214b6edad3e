//! Every answer the proxy gives on its own — no route, no healthy upstream, overflow, timeout, fault abort,
//! RBAC denial — is a [`ProxyError`]. Layers return it; [`ProxyError::local_reply`] is the one place that
//! decides its status code, Envoy response flag, `response_code_details` and body, so the access log and the
//! client always agree with Envoy's vocabulary.

use http::StatusCode;

/// A request body over the limit (`max_request_body`), as the HTTP/1 server hands it to the stack: it
/// answers 413 like any body the stack finds too large while buffering it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body over the limit")]
pub struct BodyTooLarge;

/// Envoy's `response_code_details` for a request the HTTP/1 server rejected before it could be parsed
/// (logged with flag `DPE`): a head too large or with too many fields (431), a transfer coding other than
/// chunked (501), anything else malformed (400).
pub fn codec_error_details(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "http1.headers_too_large",
        StatusCode::NOT_IMPLEMENTED => "http1.invalid_transfer_encoding",
        _ => "http1.codec_error",
    }
}

/// Why the proxy answered a request itself instead of relaying an upstream response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matched the request")]
    NoRoute,
    #[error("cluster {0} not found")]
    ClusterNotFound(String),
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    #[error("upstream overflow ({0})")]
    Overflow(&'static str),
    #[error("upstream connect error: {0}")]
    ConnectFailure(String),
    #[error("upstream reset: {0}")]
    UpstreamReset(String),
    #[error("upstream request timeout")]
    Timeout,
    #[error("fault filter abort")]
    FaultAbort(StatusCode),
    /// The detail names the policy that decided, in Envoy's `matched_policy[...]` form.
    #[error("RBAC: access denied")]
    RbacDenied(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("downstream protocol error: {0}")]
    Downstream(String),
}

/// What the client receives and the access log records for a [`ProxyError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: StatusCode,
    /// Envoy response flag (`NR`, `UH`, ...); RBAC denials carry none, as in Envoy.
    pub flag: Option<&'static str>,
    /// Envoy `%RESPONSE_CODE_DETAILS%` (no spaces).
    pub details: String,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub transport_failure: Option<String>,
    pub body: String,
}

impl ProxyError {
    /// The local reply for this error, following Envoy's status codes, flags and details.
    pub fn local_reply(&self) -> LocalReply {
        let reply = |status, flag, details: &str, body: String| LocalReply {
            status,
            flag,
            details: details.to_owned(),
            transport_failure: None,
            body,
        };
        match self {
            ProxyError::NoRoute => reply(StatusCode::NOT_FOUND, Some("NR"), "route_not_found", String::new()),
            ProxyError::ClusterNotFound(_) => {
                reply(StatusCode::SERVICE_UNAVAILABLE, Some("NC"), "cluster_not_found", String::new())
            }
            ProxyError::NoHealthyUpstream => {
                reply(StatusCode::SERVICE_UNAVAILABLE, Some("UH"), "no_healthy_upstream", "no healthy upstream".into())
            }
            ProxyError::Overflow(_) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("UO"),
                "upstream_reset_before_response_started{overflow}",
                "upstream connect error or disconnect/reset before headers. reset reason: overflow".into(),
            ),
            ProxyError::ConnectFailure(reason) => LocalReply {
                transport_failure: Some(reason.clone()),
                ..reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("UF"),
                    "upstream_reset_before_response_started{connection_failure}",
                    format!(
                        "upstream connect error or disconnect/reset before headers. reset reason: connection \
                         failure, transport failure reason: {reason}"
                    ),
                )
            },
            ProxyError::UpstreamReset(reason) => LocalReply {
                transport_failure: Some(reason.clone()),
                ..reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("UC"),
                    "upstream_reset_before_response_started{connection_termination}",
                    "upstream connect error or disconnect/reset before headers. reset reason: connection \
                     termination"
                        .into(),
                )
            },
            ProxyError::Timeout => reply(
                StatusCode::GATEWAY_TIMEOUT,
                Some("UT"),
                "upstream_response_timeout",
                "upstream request timeout".into(),
            ),
            ProxyError::FaultAbort(status) => {
                reply(*status, Some("FI"), "fault_filter_abort", "fault filter abort".into())
            }
            ProxyError::RbacDenied(policy) => reply(
                StatusCode::FORBIDDEN,
                None,
                &format!("rbac_access_denied_matched_policy[{policy}]"),
                "RBAC: access denied".into(),
            ),
            ProxyError::PayloadTooLarge(_) => {
                reply(StatusCode::PAYLOAD_TOO_LARGE, None, "request_payload_too_large", "Payload Too Large".into())
            }
            ProxyError::Downstream(_) => {
                reply(StatusCode::BAD_REQUEST, Some("DPE"), "downstream_protocol_error", "Bad Request".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_follow_envoy() {
        let nr = ProxyError::NoRoute.local_reply();
        assert_eq!((nr.status.as_u16(), nr.flag, nr.details.as_str()), (404, Some("NR"), "route_not_found"));
        let uo = ProxyError::Overflow("pending").local_reply();
        assert_eq!((uo.status.as_u16(), uo.flag), (503, Some("UO")));
        let ut = ProxyError::Timeout.local_reply();
        assert_eq!((ut.status.as_u16(), ut.flag), (504, Some("UT")));
        let rbac = ProxyError::RbacDenied("none".into()).local_reply();
        assert_eq!((rbac.status.as_u16(), rbac.flag), (403, None));
        assert!(rbac.details.starts_with("rbac_access_denied"));
        assert!(!ProxyError::ConnectFailure("refused".into()).local_reply().details.contains(' '));
    }
}
