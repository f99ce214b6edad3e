//! Sidecars over real sockets and real mTLS: identities from a mesh CA, PeerAuthentication STRICT /
//! PERMISSIVE, refusal of foreign certificates, SPIFFE verification of upstreams, AuthorizationPolicy.

mod common;

use common::*;
use meshlens_model::{Mtls, Reporter};
use meshlens_proxy::{AccessLogFormat, IdentityOptions, Running, SidecarOptions, ca, start_sidecar};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Mesh {
    dir: tempfile::TempDir,
    ca_dir: PathBuf,
    reviews_port: u16,
    productpage_port: u16,
}

impl Mesh {
    fn new() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        ca::init(&ca_dir, false).unwrap();
        Mesh { ca_dir, dir, reviews_port: free_port(), productpage_port: free_port() }
    }

    fn config(&self, extra: &str) -> PathBuf {
        let yaml = format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec: {{selector: {{app: reviews}}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: productpage, namespace: default}}
spec: {{selector: {{app: productpage}}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {reviews}}}
  labels: {{app: reviews, security.istio.io/tlsMode: istio}}
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: productpage-1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {productpage}}}
  labels: {{app: productpage, security.istio.io/tlsMode: istio}}
  serviceAccount: bookinfo-productpage
{extra}"#,
            reviews = self.reviews_port,
            productpage = self.productpage_port,
        );
        write(self.dir.path(), "mesh.yaml", &yaml)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn sidecar(&self, workload: &str, app: SocketAddr, identity: IdentityOptions, log: &str) -> Running {
        let mut common = common(vec![self.dir.path().join("mesh.yaml")], &self.log(log), AccessLogFormat::Json);
        common.identity = identity;
        let options = SidecarOptions {
            common,
            namespace: "default".into(),
            workload: workload.into(),
            app,
            outbound: "127.0.0.1:0".parse().unwrap(),
        };
        start_sidecar(options).await.unwrap()
    }

    fn ca(&self) -> IdentityOptions {
        IdentityOptions::CaDir(self.ca_dir.clone())
    }

    /// A workload certificate from the mesh CA for `spiffe`.
    fn issue(&self, spiffe: &str) -> ca::Issued {
        ca::issue(&self.ca_dir, &spiffe.parse().unwrap(), ca::WORKLOAD_VALIDITY).unwrap()
    }
}

const PRODUCTPAGE_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

fn peer_authentication(mode: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: default}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )
}

#[tokio::test]
async fn sidecars_speak_mtls_and_log_both_sides_with_identities() {
    let mesh = Mesh::new();
    mesh.config(&peer_authentication("STRICT"));
    let app = Backend::start("reviews").await;
    let reviews = mesh.sidecar("reviews-1", app.addr, mesh.ca(), "reviews.log").await;
    let productpage = mesh.sidecar("productpage-1", "127.0.0.1:9".parse().unwrap(), mesh.ca(), "productpage.log").await;
    let outbound = productpage.addr("outbound").unwrap();

    // The app uses the sidecar as its HTTP proxy: absolute-form URI, short service name.
    let answer =
        request(outbound, "GET", "reviews:9080", "http://reviews:9080/reviews/1", &[("x-request-id", "req-1")]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "reviews"));
    let seen = &app.requests()[0];
    assert_eq!(seen.path, "/reviews/1");
    assert_eq!(seen.headers["x-request-id"], "req-1");
    assert_eq!(seen.headers["x-forwarded-client-cert"], format!("By={REVIEWS_ID};URI={PRODUCTPAGE_ID}").as_str());
    assert!(seen.headers.contains_key("traceparent"));
    assert!(!seen.headers.contains_key("x-envoy-peer-metadata-id"));

    let source = &json_records(&log_lines(&mesh.log("productpage.log"), 1).await)[0];
    assert_eq!((source.reporter, source.mtls), (Reporter::Source, Mtls::Mutual));
    assert_eq!(source.upstream_cluster.as_deref(), Some("outbound|9080||reviews.default.svc.cluster.local"));
    assert_eq!(source.destination_principal.as_deref(), Some(REVIEWS_ID));
    assert_eq!(source.source_workload.as_deref(), Some("productpage-1"));
    assert_eq!(source.attempts, Some(1));
    assert_eq!(source.source_format, meshlens_model::SourceFormat::MeshlensJson);
    let destination = &json_records(&log_lines(&mesh.log("reviews.log"), 1).await)[0];
    assert_eq!((destination.reporter, destination.mtls), (Reporter::Destination, Mtls::Mutual));
    assert_eq!(destination.source_principal.as_deref(), Some(PRODUCTPAGE_ID));
    assert_eq!(destination.source_workload.as_deref(), Some("productpage-1"));
    assert_eq!(
        destination.requested_server_name.as_deref(),
        Some("outbound_.9080_._.reviews.default.svc.cluster.local")
    );
    assert_eq!(destination.destination_service.as_deref(), Some("reviews.default.svc.cluster.local"));
    assert_eq!(destination.request_id.as_deref(), Some("req-1"));
    assert_eq!(destination.trace_id, source.trace_id, "one trace across both hops");
    reviews.shutdown().await;
    productpage.shutdown().await;
}

#[tokio::test]
async fn strict_rejects_plaintext_and_permissive_accepts_both_after_a_reload() {
    let mesh = Mesh::new();
    mesh.config(&peer_authentication("STRICT"));
    let app = Backend::start("reviews").await;
    let reviews = mesh.sidecar("reviews-1", app.addr, mesh.ca(), "reviews.log").await;
    let productpage = mesh.sidecar("productpage-1", "127.0.0.1:9".parse().unwrap(), mesh.ca(), "productpage.log").await;
    let inbound = reviews.addr(&format!("inbound-{}", mesh.reviews_port)).unwrap();
    let outbound = productpage.addr("outbound").unwrap();

    assert!(try_get(inbound, "reviews", "/").await.is_err(), "STRICT must refuse plaintext");
    assert_eq!(request(outbound, "GET", "reviews:9080", "http://reviews:9080/", &[]).await.status, 200);

    mesh.config(&peer_authentication("PERMISSIVE"));
    let mut plaintext = Err(String::new());
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        plaintext = try_get(inbound, "reviews", "/").await;
        if plaintext.is_ok() {
            break;
        }
    }
    assert_eq!(plaintext.unwrap().status, 200, "PERMISSIVE accepts plaintext on the same port");
    assert_eq!(request(outbound, "GET", "reviews:9080", "http://reviews:9080/", &[]).await.status, 200);
    let records = json_records(&log_lines(&mesh.log("reviews.log"), 3).await);
    let modes: Vec<Mtls> = records.iter().map(|r| r.mtls).collect();
    assert!(modes.contains(&Mtls::Plaintext) && modes.contains(&Mtls::Mutual), "{modes:?}");
    reviews.shutdown().await;
    productpage.shutdown().await;
}

fn write_issued(dir: &Path, issued: &ca::Issued) -> IdentityOptions {
    ca::write_issued(dir, issued).unwrap();
    IdentityOptions::Files { cert: dir.join(ca::CERT_CHAIN), key: dir.join(ca::KEY), root: dir.join(ca::ROOT_CERT) }
}

#[tokio::test]
async fn foreign_ca_and_foreign_trust_domain_client_certs_are_refused() {
    let mesh = Mesh::new();
    mesh.config(&peer_authentication("STRICT"));
    let app = Backend::start("reviews").await;
    let reviews = mesh.sidecar("reviews-1", app.addr, mesh.ca(), "reviews.log").await;
    let inbound = reviews.addr(&format!("inbound-{}", mesh.reviews_port)).unwrap();

    let good = mesh.issue(PRODUCTPAGE_ID);
    let answer = tls_get(inbound, mesh_client(&good.cert_chain_pem, &good.key_pem), "reviews", "reviews", "/").await;
    assert_eq!(answer.unwrap().status, 200);

    let other_ca = mesh.dir.path().join("other-ca");
    ca::init(&other_ca, false).unwrap();
    let foreign = ca::issue(&other_ca, &PRODUCTPAGE_ID.parse().unwrap(), ca::WORKLOAD_VALIDITY).unwrap();
    let answer =
        tls_get(inbound, mesh_client(&foreign.cert_chain_pem, &foreign.key_pem), "reviews", "reviews", "/").await;
    assert!(answer.is_err(), "a certificate from another CA must be refused: {answer:?}");

    let wrong_domain = mesh.issue("spiffe://evil.example/ns/default/sa/bookinfo-productpage");
    let answer =
        tls_get(inbound, mesh_client(&wrong_domain.cert_chain_pem, &wrong_domain.key_pem), "reviews", "reviews", "/")
            .await;
    assert!(answer.is_err(), "a SPIFFE ID outside the trust domain must be refused: {answer:?}");
    assert_eq!(app.hits(), 1);
    reviews.shutdown().await;
}

#[tokio::test]
async fn outbound_refuses_an_upstream_presenting_the_wrong_spiffe_id() {
    let mesh = Mesh::new();
    mesh.config(&peer_authentication("STRICT"));
    let app = Backend::start("reviews").await;
    // The reviews sidecar runs with a certificate for another service account than the config says.
    let impostor =
        write_issued(&mesh.dir.path().join("impostor"), &mesh.issue("spiffe://cluster.local/ns/default/sa/impostor"));
    let reviews = mesh.sidecar("reviews-1", app.addr, impostor, "reviews.log").await;
    let productpage = mesh.sidecar("productpage-1", "127.0.0.1:9".parse().unwrap(), mesh.ca(), "productpage.log").await;
    let outbound = productpage.addr("outbound").unwrap();

    let answer = request(outbound, "GET", "reviews:9080", "http://reviews:9080/", &[]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(app.hits(), 0);
    let record = &json_records(&log_lines(&mesh.log("productpage.log"), 1).await)[0];
    assert_eq!(record.response_flags, ["UF", "URX"]);
    assert_eq!(record.attempts, Some(3), "Istio's default policy retries connect failures twice");
    let text = std::fs::read_to_string(mesh.log("productpage.log")).unwrap();
    assert!(text.contains("upstream_reset_before_response_started{connection_failure}"), "{text}");
    reviews.shutdown().await;
    productpage.shutdown().await;
}

#[tokio::test]
async fn authorization_policy_deny_answers_403_and_allow_lists_principals() {
    let mesh = Mesh::new();
    let policies = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"], methods: [GET, POST]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]}]
"#;
    mesh.config(&format!("{}{policies}", peer_authentication("PERMISSIVE")));
    let app = Backend::start("reviews").await;
    let reviews = mesh.sidecar("reviews-1", app.addr, mesh.ca(), "reviews.log").await;
    let productpage = mesh.sidecar("productpage-1", "127.0.0.1:9".parse().unwrap(), mesh.ca(), "productpage.log").await;
    let outbound = productpage.addr("outbound").unwrap();
    let inbound = reviews.addr(&format!("inbound-{}", mesh.reviews_port)).unwrap();

    assert_eq!(request(outbound, "GET", "reviews:9080", "http://reviews:9080/reviews/1", &[]).await.status, 200);
    let denied = request(outbound, "GET", "reviews:9080", "http://reviews:9080/admin/users", &[]).await;
    assert_eq!((denied.status, denied.body.as_str()), (403, "RBAC: access denied"));
    // Plaintext has no principal, so the ALLOW policy does not match it.
    assert_eq!(try_get(inbound, "reviews", "/reviews/1").await.unwrap().status, 403);
    assert_eq!(app.hits(), 1);
    let records = json_records(&log_lines(&mesh.log("reviews.log"), 3).await);
    let details: Vec<&str> = records.iter().filter_map(|r| r.response_code_details.as_deref()).collect();
    assert!(
        details.contains(&"rbac_access_denied_matched_policy[ns[default]-policy[no-admin]-rule[0]]"),
        "{details:?}"
    );
    assert!(details.contains(&"rbac_access_denied_matched_policy[none]"), "{details:?}");
    reviews.shutdown().await;
    productpage.shutdown().await;
}

#[tokio::test]
async fn rotated_certificate_files_take_effect_without_a_restart() {
    let mesh = Mesh::new();
    mesh.config(&peer_authentication("STRICT"));
    let app = Backend::start("reviews").await;
    let certs = mesh.dir.path().join("reviews-certs");
    let identity = write_issued(&certs, &mesh.issue("spiffe://cluster.local/ns/default/sa/impostor"));
    let reviews = mesh.sidecar("reviews-1", app.addr, identity, "reviews.log").await;
    let productpage = mesh.sidecar("productpage-1", "127.0.0.1:9".parse().unwrap(), mesh.ca(), "productpage.log").await;
    let outbound = productpage.addr("outbound").unwrap();

    // Origin-form request with a Host header naming `service.namespace`.
    assert_eq!(request(outbound, "GET", "reviews.default:9080", "/", &[]).await.status, 503);
    ca::write_issued(&certs, &mesh.issue(REVIEWS_ID)).unwrap();
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = request(outbound, "GET", "reviews.default:9080", "/", &[]).await.status;
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "the sidecar now presents the rotated certificate");
    reviews.shutdown().await;
    productpage.shutdown().await;
}

#[tokio::test]
async fn an_ingress_gateway_with_an_identity_originates_mtls_to_sidecars() {
    let mesh = Mesh::new();
    let gateway = r#"
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec: {hosts: ["*"], gateways: [gw], http: [{route: [{destination: {host: reviews}}]}]}
"#;
    let config = mesh.config(&format!("{}{gateway}", peer_authentication("STRICT")));
    let app = Backend::start("reviews").await;
    let reviews = mesh.sidecar("reviews-1", app.addr, mesh.ca(), "reviews.log").await;
    let mut common = common(vec![config], &mesh.log("gateway.log"), AccessLogFormat::Json);
    common.identity = mesh.ca();
    let options = meshlens_proxy::IngressOptions {
        common,
        listen: std::collections::BTreeMap::from([(80, "127.0.0.1:0".parse().unwrap())]),
        credential_dir: None,
    };
    let ingress = meshlens_proxy::start_ingress(options).await.unwrap();
    let answer = get(ingress.addr("port-80").unwrap(), "bookinfo.example.com", "/reviews/1").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "reviews"));
    let gateway_record = &json_records(&log_lines(&mesh.log("gateway.log"), 1).await)[0];
    assert_eq!((gateway_record.reporter, gateway_record.mtls), (Reporter::Gateway, Mtls::Mutual));
    let inbound = &json_records(&log_lines(&mesh.log("reviews.log"), 1).await)[0];
    assert_eq!(
        inbound.source_principal.as_deref(),
        Some("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account")
    );
    ingress.shutdown().await;
    reviews.shutdown().await;
}

#[tokio::test]
async fn workload_and_port_level_peer_authentication_override_the_namespace() {
    let mesh = Mesh::new();
    let reviews_port = mesh.reviews_port;
    let policies = format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: reviews, namespace: default}}\n\
         spec: {{selector: {{matchLabels: {{app: reviews}}}}, mtls: {{mode: STRICT}}, portLevelMtls: {{{reviews_port}: {{mode: DISABLE}}}}}}\n",
        peer_authentication("STRICT")
    );
    mesh.config(&policies);
    let app = Backend::start("reviews").await;
    let reviews = mesh.sidecar("reviews-1", app.addr, mesh.ca(), "reviews.log").await;
    let inbound = reviews.addr(&format!("inbound-{reviews_port}")).unwrap();
    // DISABLE on this port: plaintext is served although namespace and workload say STRICT.
    assert_eq!(try_get(inbound, "reviews", "/").await.unwrap().status, 200);
    let record = &json_records(&log_lines(&mesh.log("reviews.log"), 1).await)[0];
    assert_eq!(record.mtls, Mtls::Plaintext);
    reviews.shutdown().await;
}

#[tokio::test]
async fn the_app_may_name_a_service_in_every_form_kubernetes_dns_allows() {
    let mesh = Mesh::new();
    let app = Backend::start("reviews").await;
    // A Service of another namespace, with a cluster IP, whose endpoint (without a sidecar) is the same app.
    let ratings = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: ratings, namespace: shop}}\n\
         spec: {{clusterIP: 10.96.0.42, selector: {{app: ratings}}, ports: [{{name: http, port: 9080}}]}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: ratings-1, namespace: shop}}\n\
         spec: {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: ratings}}}}\n",
        app.addr.port()
    );
    mesh.config(&format!("{}{ratings}", peer_authentication("PERMISSIVE")));
    let reviews = mesh.sidecar("reviews-1", app.addr, mesh.ca(), "reviews.log").await;
    let productpage = mesh.sidecar("productpage-1", "127.0.0.1:9".parse().unwrap(), mesh.ca(), "productpage.log").await;
    let outbound = productpage.addr("outbound").unwrap();
    let names = [
        ("reviews", "reviews.default.svc.cluster.local"),
        ("reviews.default", "reviews.default.svc.cluster.local"),
        ("reviews.default.svc", "reviews.default.svc.cluster.local"),
        ("reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local"),
        ("ratings.shop", "ratings.shop.svc.cluster.local"),
        ("ratings.shop.svc", "ratings.shop.svc.cluster.local"),
        ("10.96.0.42", "ratings.shop.svc.cluster.local"),
    ];
    for (name, _) in names {
        let authority = format!("{name}:9080");
        let answer = request(outbound, "GET", &authority, &format!("http://{authority}/"), &[]).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "reviews"), "{name}");
    }
    // A bare name outside the app's namespace is not a Service of its namespace.
    let answer = request(outbound, "GET", "ratings:9080", "http://ratings:9080/", &[]).await;
    assert_eq!(answer.status, 404, "ratings is in another namespace");
    let records = json_records(&log_lines(&mesh.log("productpage.log"), names.len() + 1).await);
    for ((name, service), record) in names.iter().zip(&records) {
        assert_eq!(record.destination_service.as_deref(), Some(*service), "{name}");
    }
    reviews.shutdown().await;
    productpage.shutdown().await;
}
