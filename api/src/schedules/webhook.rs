//! Webhook deliveries: one HTTP(S) POST of a report's JSON payload (docs/reports.md, "Webhook payload")
//! per attempt. Any 2xx answer is a delivery; anything else, or no answer within the timeout, is a failed
//! attempt that the ticker retries with exponential backoff. Deliveries are at-least-once (a crash after
//! the POST and before recording it sends again), so receivers deduplicate on `X-Meshlens-Delivery`.

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Checks that `url` is an absolute `http://` or `https://` URL with a host.
pub fn validate_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("webhook_url {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("webhook_url {url:?}: must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("webhook_url {url:?}: has no host"));
    }
    Ok(())
}

/// Sends webhook payloads; cheap to clone.
#[derive(Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookClient").field("timeout", &self.timeout).finish()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub delivered: bool,
    pub http_status: Option<u16>,
    /// Why it was not delivered.
    pub error: Option<String>,
}

/// Most bytes of a failed answer's body quoted in the delivery's error.
const QUOTED_BODY: usize = 200;

impl WebhookClient {
    pub fn new(timeout: Duration) -> WebhookClient {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            // The ring provider supports the default protocol versions; this cannot fail.
            .unwrap_or_else(|_| hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots())
            .https_or_http()
            .enable_http1()
            .build();
        WebhookClient { client: Client::builder(TokioExecutor::new()).build(connector), timeout }
    }

    /// POSTs `payload` (JSON) to `url`.
    pub async fn post(&self, url: &str, delivery_id: i64, attempt: i64, payload: Bytes) -> Outcome {
        let failed =
            |error: String, http_status: Option<u16>| Outcome { delivered: false, http_status, error: Some(error) };
        let request = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("meshlens/", env!("CARGO_PKG_VERSION")))
            .header("x-meshlens-event", "report")
            .header("x-meshlens-delivery", delivery_id.to_string())
            .header("x-meshlens-attempt", attempt.to_string())
            .body(Full::new(payload));
        let request = match request {
            Ok(request) => request,
            Err(e) => return failed(format!("invalid request: {e}"), None),
        };
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => return failed(format!("no answer within {:?}", self.timeout), None),
            Ok(Err(e)) => return failed(error_chain(&e), None),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Outcome { delivered: true, http_status: Some(status.as_u16()), error: None };
        }
        let body = match tokio::time::timeout(self.timeout, response.into_body().collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            _ => Bytes::new(),
        };
        let quoted = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)]).into_owned();
        failed(format!("answered {status}: {}", quoted.trim()), Some(status.as_u16()))
    }
}

/// An error with its causes (`connection refused` is usually two levels down).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked() {
        assert!(validate_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(validate_url("https://hooks.example.com/x?token=1").is_ok());
        assert!(validate_url("ftp://example.com/").unwrap_err().contains("http://"));
        assert!(validate_url("/relative").is_err());
        assert!(validate_url("http://").is_err());
    }
}
