//! The small HTTP toolkit the demo's apps, traffic generator and log shipper share: one pooled HTTP/1.1
//! client type and helpers to answer and to call with a deadline.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::IpAddr;
use std::time::Duration;

pub type Body = Full<Bytes>;
pub type HttpClient = Client<HttpConnector, Body>;

/// How long any one call may take before the demo gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A pooled client; with `source`, its connections leave from that local address (how the demo's legacy
/// job gets its own IP, by which the mesh recognizes it).
pub fn client(source: Option<IpAddr>) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(source);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// Sends `request` and reads the whole answer.
pub async fn call(client: &HttpClient, request: Request<Body>) -> anyhow::Result<(StatusCode, Bytes)> {
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange).await.map_err(|_| anyhow::anyhow!("no answer in {CALL_TIMEOUT:?}"))?
}

pub fn respond(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
