//! The traffic analyses through their library API, on records built in memory (the REST API and `meshlens
//! analyze` call the same functions). The behaviour cases in the repository's `tests/cases` cover the
//! analyses end to end; these pin down the API contract: the window bounds, and pairing across directions.

use chrono::{DateTime, TimeDelta, Utc};
use meshlens_analyzer::traffic::{self, TrafficOptions, Window};
use meshlens_model::mesh::{LoadReport, MeshConfig};
use meshlens_model::{Direction, Mtls, Reporter, RequestRecord};

const MESH: &str = "
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
";

fn mesh() -> MeshConfig {
    let mut report = LoadReport::default();
    report.parse_str("mesh.yaml", MESH);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    MeshConfig::new(report.resources)
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::days(20_000) + TimeDelta::seconds(seconds)
}

/// One request as the client and the server logged it.
fn pair(seconds: i64, id: &str, mtls: Mtls) -> [RequestRecord; 2] {
    let common = RequestRecord {
        timestamp: at(seconds),
        request_id: Some(id.to_owned()),
        status: Some(200),
        duration_ms: Some(10),
        destination_service: Some("cart.shop.svc.cluster.local".to_owned()),
        destination_namespace: Some("shop".to_owned()),
        source_namespace: Some("shop".to_owned()),
        source_workload: Some("frontend".to_owned()),
        ..Default::default()
    };
    let client = RequestRecord { direction: Direction::Outbound, reporter: Reporter::Source, ..common.clone() };
    let server = RequestRecord { direction: Direction::Inbound, reporter: Reporter::Destination, mtls, ..common };
    [client, server]
}

#[tokio::test]
async fn pairs_count_once_and_the_window_bounds_are_start_inclusive_end_exclusive() {
    let mut records: Vec<RequestRecord> = Vec::new();
    records.extend(pair(0, "a", Mtls::Mutual));
    records.extend(pair(30, "b", Mtls::Plaintext));
    records.extend(pair(60, "c", Mtls::Plaintext)); // at the window's end: excluded
    records.extend(pair(-1, "d", Mtls::Plaintext)); // before the window: excluded
    let ctx = traffic::requests_context(&records).expect("requests table");
    let window = Window { start: at(0), end: at(60) };
    let report = traffic::analyze(&ctx, &mesh(), window, &TrafficOptions::default()).await.expect("analysis runs");

    let overall = report.mtls.overall;
    assert_eq!((overall.requests, overall.mutual, overall.plaintext, overall.unknown), (2, 1, 1, 0));
    assert_eq!(overall.resolved_by_pairing, 2, "both client-side unknowns are settled by the server's records");
    let [edge] = report.mtls.edges.as_slice() else { panic!("{:#?}", report.mtls.edges) };
    assert_eq!((edge.source.as_str(), edge.configured.peer_authentication), ("shop/frontend", "STRICT"));
    let codes: Vec<&str> = report.findings.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["ML2001"]);
    assert_eq!(report.findings[0].origin.as_deref(), Some("mesh.yaml:1"));
}

#[tokio::test]
async fn an_empty_table_gives_an_empty_report() {
    let ctx = traffic::requests_context(&[]).expect("requests table");
    let window = Window { start: at(0), end: at(60) };
    let report = traffic::analyze(&ctx, &mesh(), window, &TrafficOptions::default()).await.expect("analysis runs");
    assert_eq!(report.mtls.overall.requests, 0);
    assert!(report.findings.is_empty() && report.recommendations.is_empty());
    assert!(report.routes.routes.is_empty());
}

#[tokio::test]
async fn port_level_modes_apply_to_the_workload_port_not_the_service_port() {
    let mut report = LoadReport::default();
    report.parse_str(
        "mesh.yaml",
        &format!(
            "{MESH}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {{name: cart, namespace: shop}}\n\
             spec: {{selector: {{matchLabels: {{app: cart}}}}, mtls: {{mode: STRICT}}, portLevelMtls: {{8080: {{mode: PERMISSIVE}}}}}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: cart-0, namespace: shop, labels: {{app: cart}}}}\n"
        ),
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mesh = MeshConfig::new(report.resources);
    let [_, mut server] = pair(0, "a", Mtls::Plaintext);
    // The service port (80) is what the record's destination_port says; the workload listens on 8080.
    server.destination_port = Some(80);
    server.upstream_cluster = Some("inbound|8080||".to_owned());
    let ctx = traffic::requests_context(&[server]).expect("requests table");
    let window = Window { start: at(0), end: at(60) };
    let report = traffic::analyze(&ctx, &mesh, window, &TrafficOptions::default()).await.expect("analysis runs");
    let codes: Vec<&str> = report.findings.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["ML2002"], "port 8080 is PERMISSIVE: plaintext there is a risk, not a violation");
}

#[tokio::test]
async fn extreme_durations_do_not_break_recommendations() {
    let mut report = LoadReport::default();
    report.parse_str(
        "mesh.yaml",
        &format!(
            "{MESH}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {{name: cart, namespace: shop}}\n\
             spec: {{hosts: [cart], http: [{{route: [{{destination: {{host: cart}}}}], timeout: 1s}}]}}\n"
        ),
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mesh = MeshConfig::new(report.resources);
    let mut records = Vec::new();
    for (i, duration) in [u64::MAX, u64::MAX - 1, 0].into_iter().enumerate() {
        let [mut client, mut server] = pair(i as i64, &format!("r{i}"), Mtls::Mutual);
        client.status = Some(503);
        client.authority = Some("cart".to_owned());
        (client.duration_ms, server.duration_ms) = (Some(duration), Some(duration));
        records.extend([client, server]);
    }
    let ctx = traffic::requests_context(&records).expect("requests table");
    let window = Window { start: at(0), end: at(60) };
    let report = traffic::analyze(&ctx, &mesh, window, &TrafficOptions::default()).await.expect("analysis runs");
    let kinds: Vec<String> = report.recommendations.iter().map(|r| format!("{:?}", r.kind)).collect();
    assert_eq!(kinds, ["Timeout", "Retries", "OutlierDetection"], "{:#?}", report.recommendations);
}
