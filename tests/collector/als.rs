//! Envoy ALS: a tonic client streams HTTP entries with TLS properties, as an Istio sidecar configured with
//! the `envoyHttpAls` provider does; `meshlens query` then shows principals, mTLS and attribution.

use crate::harness::{Collector, runtime};
use envoy_types::pb::envoy::config::core::v3::{Address, Node, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::CertificateProperties;
use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::certificate_properties::SubjectAltName;
use envoy_types::pb::envoy::data::accesslog::v3::tls_properties::certificate_properties::subject_alt_name::San;
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties, ResponseFlags, TlsProperties,
};
use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsMessage;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_client::AccessLogServiceClient;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
    HttpAccessLogEntries, Identifier, LogEntries,
};
use envoy_types::pb::google::protobuf::{Timestamp, UInt32Value};
use serde_json::json;

fn addr(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn cert(uri: &str) -> Option<CertificateProperties> {
    Some(CertificateProperties {
        subject_alt_name: vec![SubjectAltName { san: Some(San::Uri(uri.into())) }],
        ..Default::default()
    })
}

/// An inbound request to reviews as its sidecar logs it; `peer` is the client's certificate SAN, if any.
fn entry(path: &str, status: u32, peer: Option<&str>) -> HttpAccessLogEntry {
    HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            start_time: Some(Timestamp { seconds: 1_750_000_000, nanos: 0 }),
            downstream_remote_address: addr("10.244.2.30", 40000),
            downstream_local_address: addr("10.244.1.40", 9080),
            upstream_remote_address: addr("10.244.1.40", 9080),
            upstream_cluster: "inbound|9080||".into(),
            response_flags: Some(ResponseFlags { upstream_connection_failure: status == 503, ..Default::default() }),
            tls_properties: peer.map(|peer| TlsProperties {
                tls_version: 4,
                tls_sni_hostname: "outbound_.9080_.v2_.reviews.bookinfo.svc.cluster.local".into(),
                peer_certificate_properties: cert(peer),
                local_certificate_properties: cert("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        protocol_version: 2,
        request: Some(HttpRequestProperties {
            request_method: 1,
            path: path.into(),
            authority: "reviews:9080".into(),
            ..Default::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: status }),
            ..Default::default()
        }),
    }
}

fn message(first: bool, entries: Vec<HttpAccessLogEntry>) -> StreamAccessLogsMessage {
    StreamAccessLogsMessage {
        identifier: first.then(|| Identifier {
            node: Some(Node {
                id: "sidecar~10.244.1.40~reviews-v2-7bf8c9648f-4kkx9.bookinfo~bookinfo.svc.cluster.local".into(),
                ..Default::default()
            }),
            log_name: "envoyHttpAls".into(),
        }),
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries { log_entry: entries })),
    }
}

#[test]
fn als_entries_with_tls_properties_are_stored_with_principals_and_mtls() {
    let mut collector = Collector::start();
    runtime().block_on(async {
        let mut client = AccessLogServiceClient::connect(collector.grpc_url()).await.unwrap();
        let stream = futures::stream::iter(vec![
            message(
                true,
                vec![entry("/reviews/1", 200, Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"))],
            ),
            message(false, vec![entry("/reviews/2", 503, None), HttpAccessLogEntry::default()]),
        ]);
        client.stream_access_logs(stream).await.unwrap();
    });
    collector.stop();
    let rows = collector.query(
        "SELECT path, status, response_flags, mtls, source_principal, destination_principal, tls_version, \
         source_namespace, destination_workload, destination_namespace, destination_service, source_format \
         FROM requests ORDER BY path",
    );
    assert_eq!(
        rows,
        [
            json!({
                "path": "/reviews/1", "status": 200, "response_flags": [], "mtls": "mutual",
                "source_principal": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
                "destination_principal": "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
                "tls_version": "TLSv1.3", "source_namespace": "bookinfo", "destination_workload": "reviews-v2",
                "destination_namespace": "bookinfo", "destination_service": "reviews.bookinfo.svc.cluster.local",
                "source_format": "envoy_als",
            }),
            json!({
                "path": "/reviews/2", "status": 503, "response_flags": ["UF"], "mtls": "plaintext",
                "source_principal": null, "destination_principal": null, "tls_version": null,
                "source_namespace": null, "destination_workload": "reviews-v2", "destination_namespace": "bookinfo",
                "destination_service": null, "source_format": "envoy_als",
            }),
        ]
    );
}
