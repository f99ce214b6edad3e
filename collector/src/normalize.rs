//! The derivation rules every access-log format shares: what the upstream cluster name and the requested
//! server name (SNI) say about direction, reporter, destination and mTLS. docs/formats.md states the same
//! rules for users; keep the two in step.

use meshlens_model::names::{ClusterDirection, ClusterName, IstioSni, service_fqdn_parts};
use meshlens_model::{Direction, Mtls, Reporter, RequestRecord};

/// Fills `direction`, `reporter`, `destination_{service,port,subset,namespace}` and `mtls` from the fields a
/// format parsed (`upstream_cluster`, `requested_server_name`).
pub fn derive(record: &mut RequestRecord) {
    let cluster = record.upstream_cluster.as_deref().and_then(|c| c.parse::<ClusterName>().ok());
    let sni = record.requested_server_name.as_deref().and_then(|s| s.parse::<IstioSni>().ok());
    record.direction = record.upstream_cluster.as_deref().map_or(Direction::Unknown, direction);
    record.reporter = reporter(record.direction);
    record.mtls = mtls(record.direction, record.requested_server_name.is_some(), sni.is_some());
    let (service, port, subset) = match (&cluster, sni) {
        (Some(c @ ClusterName { direction: ClusterDirection::Outbound, .. }), _) => {
            (c.host.clone(), Some(c.port), c.subset.clone())
        }
        (_, Some(sni)) => (Some(sni.host), Some(sni.port), sni.subset),
        // An inbound cluster's third part is the Service port name, not a subset.
        (Some(c @ ClusterName { direction: ClusterDirection::Inbound, host: Some(host), .. }), None) => {
            (Some(host.clone()), Some(c.port), None)
        }
        _ => (None, None, None),
    };
    record.destination_namespace =
        service.as_deref().and_then(service_fqdn_parts).map(|(_, namespace)| namespace.to_owned());
    record.destination_service = service;
    record.destination_port = port;
    record.destination_subset = subset;
}

/// Which way the request crossed the proxy, from the cluster it was sent to. Besides Istio's
/// `outbound|...`/`inbound|...` clusters, sidecars route unknown outbound destinations to
/// `PassthroughCluster` or `BlackHoleCluster`, and inbound traffic to ports no Service names to
/// `InboundPassthroughCluster` (`...Ipv4`/`...Ipv6` since Istio 1.8).
fn direction(cluster: &str) -> Direction {
    if cluster.starts_with("outbound|") || cluster == "PassthroughCluster" || cluster == "BlackHoleCluster" {
        Direction::Outbound
    } else if cluster.starts_with("inbound|") || cluster.starts_with("InboundPassthroughCluster") {
        Direction::Inbound
    } else {
        Direction::Unknown
    }
}

/// The server-side sidecar logs inbound requests and the client-side one outbound requests. A gateway also
/// logs outbound clusters; telling it apart needs more than one line (attribution), or
/// [`LineParser::with_reporter`](crate::LineParser::with_reporter).
fn reporter(direction: Direction) -> Reporter {
    match direction {
        Direction::Inbound => Reporter::Destination,
        Direction::Outbound => Reporter::Source,
        Direction::Unknown => Reporter::Unknown,
    }
}

/// Only the server side can tell from its own log line: an Istio client sidecar originating mTLS always sends
/// an `outbound_.PORT_.SUBSET_.HOST` SNI, and plaintext has no SNI at all. Another SNI means TLS the mesh did
/// not originate (passed through to the app), which says nothing about mTLS. The client side logs the SNI its
/// own client sent, not what it sent upstream, so an outbound line cannot tell.
fn mtls(direction: Direction, has_sni: bool, istio_sni: bool) -> Mtls {
    match direction {
        Direction::Inbound if istio_sni => Mtls::Mutual,
        Direction::Inbound if !has_sni => Mtls::Plaintext,
        _ => Mtls::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(cluster: Option<&str>, sni: Option<&str>) -> RequestRecord {
        let mut record = RequestRecord {
            upstream_cluster: cluster.map(str::to_owned),
            requested_server_name: sni.map(str::to_owned),
            ..Default::default()
        };
        derive(&mut record);
        record
    }

    #[test]
    fn outbound_cluster_names_the_destination() {
        let r = derived(Some("outbound|9080|v1|reviews.default.svc.cluster.local"), None);
        assert_eq!((r.direction, r.reporter, r.mtls), (Direction::Outbound, Reporter::Source, Mtls::Unknown));
        assert_eq!(r.destination_service.as_deref(), Some("reviews.default.svc.cluster.local"));
        assert_eq!((r.destination_port, r.destination_subset.as_deref()), (Some(9080), Some("v1")));
        assert_eq!(r.destination_namespace.as_deref(), Some("default"));
    }

    #[test]
    fn inbound_with_istio_sni_is_mutual_and_the_sni_names_the_destination() {
        let r = derived(Some("inbound|9080||"), Some("outbound_.9080_.v2_.reviews.shop.svc.cluster.local"));
        assert_eq!((r.direction, r.reporter, r.mtls), (Direction::Inbound, Reporter::Destination, Mtls::Mutual));
        assert_eq!(r.destination_service.as_deref(), Some("reviews.shop.svc.cluster.local"));
        assert_eq!((r.destination_port, r.destination_subset.as_deref()), (Some(9080), Some("v2")));
        assert_eq!(r.destination_namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn inbound_without_sni_is_plaintext_and_the_cluster_host_names_the_destination() {
        let r = derived(Some("inbound|8000|http|httpbin.default.svc.cluster.local"), None);
        assert_eq!(r.mtls, Mtls::Plaintext);
        assert_eq!(r.destination_service.as_deref(), Some("httpbin.default.svc.cluster.local"));
        assert_eq!((r.destination_port, r.destination_subset), (Some(8000), None));
        let r = derived(Some("inbound|8000||"), None);
        assert_eq!((r.mtls, r.destination_service, r.destination_port), (Mtls::Plaintext, None, None));
    }

    #[test]
    fn inbound_with_a_foreign_sni_is_unknown() {
        assert_eq!(derived(Some("inbound|443||"), Some("api.example.com")).mtls, Mtls::Unknown);
    }

    #[test]
    fn istio_special_clusters_have_a_direction() {
        assert_eq!(derived(Some("PassthroughCluster"), None).direction, Direction::Outbound);
        assert_eq!(derived(Some("BlackHoleCluster"), None).direction, Direction::Outbound);
        assert_eq!(derived(Some("InboundPassthroughClusterIpv4"), None).direction, Direction::Inbound);
        let r = derived(Some("my-static-cluster"), None);
        assert_eq!((r.direction, r.reporter, r.mtls), (Direction::Unknown, Reporter::Unknown, Mtls::Unknown));
        assert_eq!(derived(None, None).direction, Direction::Unknown);
    }

    #[test]
    fn non_kubernetes_hosts_have_no_namespace() {
        let r = derived(Some("outbound|443||www.google.com"), None);
        assert_eq!((r.destination_service.as_deref(), r.destination_namespace), (Some("www.google.com"), None));
    }
}
