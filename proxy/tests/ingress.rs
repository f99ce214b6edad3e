//! Ingress gateway: the bookinfo Ingress and Gateway+VirtualService samples route to an in-process backend
//! over real sockets; unknown paths get 404 NR; HTTPS servers pick certificates by SNI.

mod common;

use common::*;
use meshlens_proxy::{AccessLogFormat, IngressOptions, start_ingress};
use std::collections::BTreeMap;

/// The bookinfo productpage workload, pointing at the test backend.
fn productpage_workload(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: productpage-v1, namespace: default}}\n\
         spec: {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: productpage, version: v1}}, serviceAccount: bookinfo-productpage}}\n"
    )
}

async fn start(files: Vec<std::path::PathBuf>, port: u16, dir: &std::path::Path) -> meshlens_proxy::Running {
    let options = IngressOptions {
        common: common(files, &dir.join("access.log"), AccessLogFormat::IstioText),
        listen: BTreeMap::from([(port, "127.0.0.1:0".parse().unwrap())]),
        credential_dir: None,
    };
    start_ingress(options).await.unwrap()
}

#[tokio::test]
async fn bookinfo_ingress_routes_paths_and_answers_404_nr_otherwise() {
    let backend = Backend::start("productpage").await;
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        format!("{FIXTURES}/bookinfo/platform/kube/bookinfo.yaml").into(),
        format!("{FIXTURES}/bookinfo/platform/kube/bookinfo-ingress.yaml").into(),
        write(dir.path(), "workload.yaml", &productpage_workload(backend.addr.port())),
    ];
    let proxy = start(files, 80, dir.path()).await;
    let addr = proxy.addr("port-80").unwrap();

    for path in ["/productpage", "/api/v1/products", "/api/v1/products/1", "/static/css/x.css", "/login"] {
        let answer = get(addr, "bookinfo.example.com", path).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "productpage"), "{path}");
    }
    // Exact paths do not match longer ones; Prefix is element-wise.
    for path in ["/productpage/x", "/api/v1/productsX", "/", "/reviews"] {
        let answer = get(addr, "bookinfo.example.com", path).await;
        assert_eq!(answer.status, 404, "{path}");
    }
    assert_eq!(backend.hits(), 5);
    let seen = backend.requests();
    assert_eq!(seen[0].headers["host"], "bookinfo.example.com");
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert!(seen[0].headers.contains_key("x-request-id"));
    // The client's address is appended to an x-forwarded-for it sent, on every request of a connection.
    let pooled = client();
    for _ in 0..2 {
        assert_eq!(send(&pooled, addr, "bookinfo.example.com", "/productpage").await.status, 200);
    }
    let forwarded = [("x-forwarded-for", "203.0.113.7")];
    let answer = request(addr, "GET", "bookinfo.example.com", "/productpage", &forwarded).await;
    assert_eq!(answer.status, 200);
    let seen = backend.requests();
    let forwarded_for: Vec<&str> = seen[5..].iter().map(|r| r.headers["x-forwarded-for"].to_str().unwrap()).collect();
    assert_eq!(forwarded_for, ["127.0.0.1", "127.0.0.1", "203.0.113.7, 127.0.0.1"]);

    let lines = log_lines(&dir.path().join("access.log"), 9).await;
    let ok = lines.iter().find(|l| l.contains("\"GET /productpage HTTP/1.1\"")).unwrap();
    assert!(ok.contains(" 200 - via_upstream - \"-\" 0 11 "), "{ok}");
    assert!(ok.contains("outbound|9080||productpage.default.svc.cluster.local"), "{ok}");
    assert!(ok.contains(&format!("\"127.0.0.1:{}\"", backend.addr.port())), "{ok}");
    let nr = lines.iter().find(|l| l.contains("\"GET /reviews HTTP/1.1\"")).unwrap();
    assert!(nr.contains(" 404 NR route_not_found "), "{nr}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn bookinfo_gateway_and_virtual_service_route_to_the_backend() {
    let backend = Backend::start("productpage").await;
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        format!("{FIXTURES}/bookinfo/platform/kube/bookinfo.yaml").into(),
        format!("{FIXTURES}/bookinfo/networking/bookinfo-gateway.yaml").into(),
        write(dir.path(), "workload.yaml", &productpage_workload(backend.addr.port())),
    ];
    let proxy = start(files, 8080, dir.path()).await;
    let addr = proxy.addr("port-8080").unwrap();
    for path in ["/productpage", "/api/v1/products", "/static/x", "/logout"] {
        let answer = get(addr, "anything.example.com", path).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "productpage"), "{path}");
    }
    let answer = get(addr, "anything.example.com", "/admin").await;
    assert_eq!(answer.status, 404);
    let lines = log_lines(&dir.path().join("access.log"), 5).await;
    assert!(lines.iter().any(|l| l.contains("\"GET /admin HTTP/1.1\" 404 NR route_not_found")), "{lines:#?}");
    proxy.shutdown().await;
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn web_workload(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: web-1, namespace: shop}}\n\
         spec: {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: web}}}}\n"
    )
}

#[tokio::test]
async fn https_servers_select_certificates_by_sni_and_mutual_requires_a_client_cert() {
    let backend = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let shop_ca = credential(&creds, "shop-cert", "shop.example.com", None);
    // The partner server trusts client certificates from its own CA.
    let client_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut client_ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client_ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let client_ca = client_ca_params.self_signed(&client_ca_key).unwrap();
    let client_issuer = rcgen::Issuer::new(client_ca_params, client_ca_key);
    let partner_ca = credential(&creds, "partner-cert", "partner.example.com", Some(&client_ca.pem()));
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .signed_by(&client_key, &client_issuer)
        .unwrap();

    let gateway = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  servers:
  - port: {number: 443, name: https-shop, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 443, name: https-partner, protocol: HTTPS}
    hosts: [partner.example.com]
    tls: {mode: MUTUAL, credentialName: partner-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [shop.example.com, partner.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: web}}]}]
"#;
    let files = vec![
        write(dir.path(), "service.yaml", SERVICE),
        write(dir.path(), "workload.yaml", &web_workload(backend.addr.port())),
        write(dir.path(), "gateway.yaml", gateway),
    ];
    let options = IngressOptions {
        common: common(files, &dir.path().join("access.log"), AccessLogFormat::Json),
        listen: BTreeMap::from([(443, "127.0.0.1:0".parse().unwrap())]),
        credential_dir: Some(creds),
    };
    let proxy = start_ingress(options).await.unwrap();
    let addr = proxy.addr("port-443").unwrap();

    let answer =
        tls_get(addr, client_config(&shop_ca, None), "shop.example.com", "shop.example.com", "/").await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "web"));
    // The partner certificate is only served for its own name: the shop CA cannot verify it.
    assert!(
        tls_get(addr, client_config(&shop_ca, None), "partner.example.com", "partner.example.com", "/").await.is_err()
    );
    // MUTUAL: no client certificate, no service.
    assert!(
        tls_get(addr, client_config(&partner_ca, None), "partner.example.com", "partner.example.com", "/")
            .await
            .is_err()
    );
    let with_cert = client_config(&partner_ca, Some((&client_cert.pem(), &client_key.serialize_pem())));
    let answer = tls_get(addr, with_cert, "partner.example.com", "partner.example.com", "/").await.unwrap();
    assert_eq!(answer.status, 200);

    let records = json_records(&log_lines(&dir.path().join("access.log"), 2).await);
    assert_eq!(records[0].requested_server_name.as_deref(), Some("shop.example.com"));
    assert_eq!(records[0].tls_version.as_deref(), Some("TLSv1.3"));
    assert_eq!(records[0].reporter, meshlens_model::Reporter::Gateway);
    proxy.shutdown().await;
}

#[tokio::test]
async fn redirects_direct_responses_rewrites_and_header_edits() {
    let backend = Backend::with(std::sync::Arc::new(|seen| (200, seen.path.clone())), std::time::Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = r#"
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 308}
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 204}
  - match: [{uri: {prefix: /api/v1}, headers: {x-beta: {exact: "yes"}}}]
    rewrite: {uri: /v2}
    headers:
      request: {set: {x-route: beta}, remove: [x-beta]}
      response: {add: {x-served-by: beta}}
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
"#;
    let files = vec![
        write(dir.path(), "service.yaml", SERVICE),
        write(dir.path(), "workload.yaml", &web_workload(backend.addr.port())),
        write(dir.path(), "routes.yaml", routes),
    ];
    let proxy = start(files, 80, dir.path()).await;
    let addr = proxy.addr("port-80").unwrap();

    let moved = get(addr, "shop.example.com", "/old/page").await;
    assert_eq!(moved.status, 308);
    assert_eq!(moved.headers["location"], "http://shop.example.com/new");
    assert_eq!(get(addr, "shop.example.com", "/health").await.status, 204);
    let beta = request(addr, "GET", "shop.example.com", "/api/v1/items?x=1", &[("x-beta", "yes")]).await;
    assert_eq!((beta.status, beta.body.as_str()), (200, "/v2/items?x=1"));
    assert_eq!(beta.headers["x-served-by"], "beta");
    let seen = backend.requests();
    assert_eq!(seen[0].headers["x-route"], "beta");
    assert!(!seen[0].headers.contains_key("x-beta"));
    assert_eq!(seen[0].headers["x-envoy-original-path"], "/api/v1/items");
    assert_eq!(get(addr, "shop.example.com", "/api/v1/items").await.body, "/api/v1/items");
    assert_eq!(get(addr, "other.example.com", "/").await.status, 404, "the VirtualService covers one host");

    let lines = log_lines(&dir.path().join("access.log"), 5).await;
    assert!(lines[0].contains(" 308 - direct_response "), "{}", lines[0]);
    assert!(lines[2].contains("\"GET /api/v1/items?x=1 HTTP/1.1\" 200"), "{}", lines[2]);
    proxy.shutdown().await;
}
