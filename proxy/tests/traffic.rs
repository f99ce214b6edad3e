//! DestinationRule and VirtualService traffic policy end to end, through an ingress gateway to in-process
//! backends: weighted splits, mirroring, retries, timeouts, outlier detection, fault aborts and
//! connection-pool overflow. Statistical checks use enough samples that their tolerance is at least 4.5
//! standard deviations (a spurious failure well under 1 in 100,000 runs), or a seeded backend.

mod common;

use common::*;
use meshlens_proxy::{AccessLogFormat, IngressOptions, Running, start_ingress};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Gateway {
    dir: tempfile::TempDir,
    proxy: Running,
}

impl Gateway {
    /// A gateway on port 80 for `web.shop`, whose endpoints are `backends` (labelled `version: vN`, N from 1).
    async fn start(backends: &[&Backend], routing: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = String::from(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}
"#,
        );
        for (i, backend) in backends.iter().enumerate() {
            yaml.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: web-{n}, namespace: shop}}\n\
                 spec: {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: web, version: v{n}}}}}\n",
                n = i + 1,
                port = backend.addr.port()
            ));
        }
        yaml.push_str(routing);
        let files = vec![write(dir.path(), "mesh.yaml", &yaml)];
        let options = IngressOptions {
            common: common(files, &dir.path().join("access.log"), AccessLogFormat::Json),
            listen: BTreeMap::from([(80, "127.0.0.1:0".parse().unwrap())]),
            credential_dir: None,
        };
        let proxy = start_ingress(options).await.unwrap();
        Gateway { dir, proxy }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.proxy.addr("port-80").unwrap()
    }

    async fn records(&self, n: usize) -> Vec<meshlens_model::RequestRecord> {
        json_records(&log_lines(&self.dir.path().join("access.log"), n).await)
    }
}

const SUBSETS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// `n` requests, eight at a time, on pooled connections; the statuses in order of completion.
async fn load(addr: std::net::SocketAddr, n: usize) -> Vec<(u16, String)> {
    let client = client();
    let results = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, results, next) = (client.clone(), results.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    let answer = send(&client, addr, "web.example.com", "/").await;
                    results.lock().unwrap().push((answer.status, answer.body));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

/// A VirtualService sending everything to `web`, and a DestinationRule with `connection_pool`.
fn pool_policy(connection_pool: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{host: web, trafficPolicy: {{connectionPool: {connection_pool}}}}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{hosts: ['*'], gateways: [gw], http: [{{route: [{{destination: {{host: web}}}}]}}]}}\n"
    )
}

#[tokio::test]
async fn upstream_connections_are_reused_up_to_max_requests_per_connection() {
    let backend = Backend::start("web").await;
    let gw = Gateway::start(&[&backend], &pool_policy("{http: {maxRequestsPerConnection: 10}}")).await;
    for _ in 0..40 {
        assert_eq!(get(gw.addr(), "web.example.com", "/").await.status, 200);
    }
    assert_eq!((backend.hits(), backend.connections.load(std::sync::atomic::Ordering::SeqCst)), (40, 4));
    gw.proxy.shutdown().await;

    // Without a limit, one connection serves every request sent one after another.
    let backend = Backend::start("web").await;
    let gw = Gateway::start(&[&backend], &pool_policy("{tcp: {connectTimeout: 1s}}")).await;
    for _ in 0..40 {
        assert_eq!(get(gw.addr(), "web.example.com", "/").await.status, 200);
    }
    assert_eq!(backend.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn h2_upgrade_policy_multiplexes_requests_over_one_http2_connection() {
    let backend = Backend::start("web").await;
    let gw = Gateway::start(&[&backend], &pool_policy("{http: {h2UpgradePolicy: UPGRADE}}")).await;
    let results = load(gw.addr(), 200).await;
    assert!(results.iter().all(|(status, body)| (*status, body.as_str()) == (200, "web")), "{results:?}");
    let versions: std::collections::BTreeSet<_> =
        backend.requests().iter().map(|r| format!("{:?}", r.version)).collect();
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), ["HTTP/2.0"]);
    assert_eq!(backend.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn weighted_split_80_20_holds_within_4_percent_over_2000_requests() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let routing = format!(
        "{SUBSETS}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{hosts: ['*'], gateways: [gw], http: [{{route: [{{destination: {{host: web, subset: v1}}, weight: 80}}, \
         {{destination: {{host: web, subset: v2}}, weight: 20}}]}}]}}\n"
    );
    let gw = Gateway::start(&[&v1, &v2], &routing).await;
    let results = load(gw.addr(), 2000).await;
    assert!(results.iter().all(|(s, _)| *s == 200));
    let share = results.iter().filter(|(_, body)| body == "v1").count() as f64 / 2000.0;
    // sd = sqrt(0.8 * 0.2 / 2000) = 0.0089; 4% is 4.5 sd.
    assert!((share - 0.8).abs() <= 0.04, "v1 share {share}");
    let records = gw.records(2000).await;
    assert!(records.iter().any(|r| r.upstream_cluster.as_deref() == Some("outbound|80|v2|web.shop.svc.cluster.local")));
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn mirroring_delivers_copies_without_affecting_responses() {
    let (live, shadow) =
        (Backend::start("live").await, Backend::with(Arc::new(|_| (500, "shadow".into())), Duration::ZERO).await);
    let routing = format!(
        "{SUBSETS}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{hosts: ['*'], gateways: [gw], http: [{{route: [{{destination: {{host: web, subset: v1}}}}], \
         mirror: {{host: web, subset: v2}}, mirrorPercentage: {{value: 100}}}}]}}\n"
    );
    let gw = Gateway::start(&[&live, &shadow], &routing).await;
    let results = load(gw.addr(), 50).await;
    assert!(results.iter().all(|(s, body)| *s == 200 && body == "live"), "the mirror's 500s never reach the client");
    for _ in 0..100 {
        if shadow.hits() == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shadow.hits(), 50);
    let copy = &shadow.requests()[0];
    assert_eq!(copy.headers["host"], "web.example.com-shadow");
    // A copy carries the request's trace (traceparent `00-TRACE-PARENT-FLAGS`), as its live attempts do.
    let trace_of = |seen: &Seen| {
        let value = seen.headers.get("traceparent").and_then(|v| v.to_str().ok()).expect("a traceparent").to_owned();
        value.split('-').nth(1).expect("a trace id").to_owned()
    };
    let live_traces: Vec<String> = live.requests().iter().map(trace_of).collect();
    assert!(live_traces.contains(&trace_of(copy)), "the copy's trace is one of the live requests' traces");
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn three_retries_turn_a_30_percent_503_upstream_into_99_percent_success() {
    // Seeded, and requests are sequential, so the backend's answers are the same on every run. Expected
    // success with four tries is 1 - 0.3^4 = 99.19%.
    let rng = Mutex::new(fastrand::Rng::with_seed(0x5eed));
    let flaky = Backend::with(
        Arc::new(move |_| if rng.lock().unwrap().f64() < 0.3 { (503, "no".into()) } else { (200, "ok".into()) }),
        Duration::ZERO,
    )
    .await;
    let routing = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\n\
         spec: {hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: web}}], retries: {attempts: 3, retryOn: 5xx}}]}\n";
    let gw = Gateway::start(&[&flaky], routing).await;
    let client = client();
    let mut ok = 0;
    for _ in 0..1000 {
        if send(&client, gw.addr(), "web.example.com", "/").await.status == 200 {
            ok += 1;
        }
    }
    assert!(ok >= 990, "{ok}/1000 succeeded");
    let records = gw.records(1000).await;
    let retried = records.iter().filter(|r| r.attempts.unwrap_or(0) > 1).count();
    let total_attempts: u32 = records.iter().filter_map(|r| r.attempts).sum();
    assert_eq!(total_attempts as usize, flaky.hits(), "every upstream try is counted in the access log");
    assert!(retried > 200, "{retried} requests were retried");
    assert!(
        records.iter().filter(|r| r.status == Some(503)).all(|r| r.attempts == Some(4) && r.response_flags == ["URX"])
    );
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn a_50ms_route_timeout_answers_504_ut() {
    let slow = Backend::with(Arc::new(|_| (200, "late".into())), Duration::from_millis(500)).await;
    let routing = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\n\
         spec: {hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: web}}], timeout: 50ms}]}\n";
    let gw = Gateway::start(&[&slow], routing).await;
    let started = std::time::Instant::now();
    let answer = get(gw.addr(), "web.example.com", "/").await;
    assert_eq!((answer.status, answer.body.as_str()), (504, "upstream request timeout"));
    assert!(started.elapsed() < Duration::from_millis(400));
    let record = &gw.records(1).await[0];
    assert_eq!(record.response_flags, ["UT"]);
    assert_eq!(record.response_code_details.as_deref(), Some("upstream_response_timeout"));
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_failing_5_times_in_a_row_is_ejected_and_later_returns() {
    let healthy = Backend::start("healthy").await;
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let sick = Backend::with(
        Arc::new(move |_| {
            if flag.load(std::sync::atomic::Ordering::SeqCst) { (503, "sick".into()) } else { (200, "well".into()) }
        }),
        Duration::ZERO,
    )
    .await;
    let routing = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 5, interval: 100ms, baseEjectionTime: 1s, maxEjectionPercent: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec: {hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: web}}], retries: {attempts: 0}}]}
"#;
    let gw = Gateway::start(&[&healthy, &sick], routing).await;
    let client = client();
    for _ in 0..10 {
        send(&client, gw.addr(), "web.example.com", "/").await;
    }
    assert_eq!(sick.hits(), 5, "round robin sends every other request to the sick endpoint until its 5th failure");
    let cluster = gw.proxy.snapshot().cluster("outbound|80||web.shop.svc.cluster.local").unwrap();
    assert_eq!(cluster.ejected(), [sick.addr.to_string()]);
    for _ in 0..20 {
        assert_eq!(send(&client, gw.addr(), "web.example.com", "/").await.status, 200);
    }
    assert_eq!(sick.hits(), 5, "ejected endpoints get no traffic");

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..10 {
        assert_eq!(send(&client, gw.addr(), "web.example.com", "/").await.status, 200);
    }
    assert!(cluster.ejected().is_empty());
    assert!(sick.hits() > 5, "the endpoint returned after baseEjectionTime");
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn a_50_percent_fault_abort_lands_within_5_percent() {
    let backend = Backend::start("ok").await;
    let routing = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\n\
         spec: {hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: web}}], \
         fault: {abort: {httpStatus: 418, percentage: {value: 50}}}}]}\n";
    let gw = Gateway::start(&[&backend], routing).await;
    let results = load(gw.addr(), 2000).await;
    let aborted = results.iter().filter(|(s, _)| *s == 418).count();
    assert_eq!(aborted + backend.hits(), 2000);
    // sd = sqrt(0.25 / 2000) = 0.0112; 5% is 4.5 sd.
    let share = aborted as f64 / 2000.0;
    assert!((share - 0.5).abs() <= 0.05, "aborted share {share}");
    let records = gw.records(2000).await;
    assert!(records.iter().filter(|r| r.status == Some(418)).all(|r| r.response_flags == ["FI"]));
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn connection_pool_overflow_answers_503_uo() {
    let slow = Backend::with(Arc::new(|_| (200, "ok".into())), Duration::from_secs(1)).await;
    let routing = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec: {hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: web}}]}]}
"#;
    let gw = Gateway::start(&[&slow], routing).await;
    let addr = gw.addr();
    let first = tokio::spawn(async move { get(addr, "web.example.com", "/").await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(async move { get(addr, "web.example.com", "/").await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One in flight, one pending: the rest overflow at once.
    for _ in 0..3 {
        let answer = get(addr, "web.example.com", "/").await;
        assert_eq!(answer.status, 503);
    }
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (200, 200));
    let records = gw.records(5).await;
    assert_eq!(records.iter().filter(|r| r.response_flags == ["UO"]).count(), 3);
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn retries_go_to_a_different_endpoint() {
    let good = Backend::start("good").await;
    let bad = Backend::with(Arc::new(|_| (503, "bad".into())), Duration::ZERO).await;
    let routing = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\n\
         spec: {hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: web}}], retries: {attempts: 1, retryOn: 5xx}}]}\n";
    let gw = Gateway::start(&[&good, &bad], routing).await;
    let results = load(gw.addr(), 200).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "one retry always reaches the good endpoint");
    let records = gw.records(200).await;
    assert_eq!(records.iter().filter(|r| r.attempts == Some(2)).count(), bad.hits());
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn destination_rule_simple_tls_verifies_the_upstream_against_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = credential(dir.path(), "web", "web.shop.svc.cluster.local", None);
    let ca_file = write(dir.path(), "ca.pem", &ca_pem);
    let cert = std::fs::read_to_string(dir.path().join("web/tls.crt")).unwrap();
    let key = std::fs::read_to_string(dir.path().join("web/tls.key")).unwrap();
    let backend = Backend::tls("over-tls", &cert, &key).await;
    let routing = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{host: web, trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: {}}}}}}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{hosts: ['*'], gateways: [gw], http: [{{route: [{{destination: {{host: web}}}}]}}]}}\n",
        ca_file.display()
    );
    let gw = Gateway::start(&[&backend], &routing).await;
    let answer = get(gw.addr(), "web.example.com", "/").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "over-tls"));

    gw.proxy.shutdown().await;

    // The same upstream verified against a CA that did not sign it: a TLS connect failure.
    let other_ca = write(dir.path(), "other-ca.pem", &credential(dir.path(), "other", "other.example.com", None));
    let gw =
        Gateway::start(&[&backend], &routing.replace(&ca_file.display().to_string(), &other_ca.display().to_string()))
            .await;
    let answer = get(gw.addr(), "web.example.com", "/").await;
    assert_eq!(answer.status, 503);
    assert!(answer.body.contains("TLS_error"), "{}", answer.body);
    let record = &gw.records(1).await[0];
    assert_eq!(record.response_flags, ["UF", "URX"]);
    gw.proxy.shutdown().await;
}

#[tokio::test]
async fn grpc_and_http2_ports_use_http2_upstream() {
    let backend = Backend::start("h2").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shop}}
spec: {{selector: {{app: api}}, ports: [{{name: grpc-api, port: 50051}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: api-1, namespace: shop}}
spec: {{address: 127.0.0.1, ports: {{grpc-api: {port}}}, labels: {{app: api}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: api, namespace: shop}}
spec: {{defaultBackend: {{service: {{name: api, port: {{name: grpc-api}}}}}}}}
"#,
        port = backend.addr.port()
    );
    let options = IngressOptions {
        common: common(
            vec![write(dir.path(), "mesh.yaml", &yaml)],
            &dir.path().join("access.log"),
            AccessLogFormat::Json,
        ),
        listen: BTreeMap::from([(80, "127.0.0.1:0".parse().unwrap())]),
        credential_dir: None,
    };
    let proxy = start_ingress(options).await.unwrap();
    let answer = get(proxy.addr("port-80").unwrap(), "api.example.com", "/pkg.Service/Method").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "h2"));
    assert_eq!(backend.requests()[0].version, http::Version::HTTP_2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn fault_delays_and_per_try_timeouts() {
    let slow = Backend::with(Arc::new(|seen| (200, seen.path.clone())), Duration::from_millis(300)).await;
    let routing = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 150ms, percentage: {value: 100}}}
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
    retries: {attempts: 2, perTryTimeout: 50ms, retryOn: 5xx}
"#;
    let gw = Gateway::start(&[&slow], routing).await;
    let started = std::time::Instant::now();
    let delayed = get(gw.addr(), "web.example.com", "/delayed").await;
    assert_eq!(delayed.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(450), "150 ms delay + 300 ms upstream");
    let timed_out = get(gw.addr(), "web.example.com", "/other").await;
    assert_eq!(timed_out.status, 504);
    let records = gw.records(2).await;
    assert_eq!(records[0].response_flags, ["DI"]);
    assert_eq!(records[1].response_flags, ["UT", "URX"]);
    assert_eq!(records[1].attempts, Some(3));
    gw.proxy.shutdown().await;
}
