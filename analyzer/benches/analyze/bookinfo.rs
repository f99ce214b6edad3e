//! Synthetic traffic of Istio's Bookinfo sample, as its sidecars and ingress gateway would log it, for the
//! analyzer benchmark. Deterministic from the seed.
//!
//! One user request enters through the ingress gateway (`istio-system/istio-ingressgateway`) and is
//! logged twice per hop, once by the client's proxy (outbound, mTLS `unknown` as in text access logs)
//! and once by the server's (inbound, `mutual` from the Istio SNI); every hop carries the user request's
//! `x-request-id`, as Bookinfo propagates it. `/productpage` calls details and reviews, reviews v2 and v3
//! call ratings. The mix follows the benchmark's config (bench/analyzer/bookinfo-policies.yaml):
//!
//! - reviews subsets observed at 52/29/19 against weights 50/30/20 (a drift the chi-square test sees);
//! - ratings through its named route `ratings-default` (500 ms timeout: a slow tail ends in `504 UT`),
//!   first tries failing with 503 and retried (the server logs both tries);
//! - `POST /login` retried by Istio's default policy after a 503 (retries of a non-idempotent method);
//! - details connection failures (`503 UF,URX`, no server record) and reviews overflows (`503 UO`);
//! - reviews v3 failing 0.5% of the time, and 30% during one two-minute incident (5xx bursts);
//! - paths no gateway route matches (`404 NR`);
//! - a workload without sidecar (`10.244.9.7`) calling details (STRICT) and ratings (PERMISSIVE) in
//!   plaintext.

use chrono::{DateTime, Utc};
use meshlens_model::record::{Direction, Mtls, Reporter, RequestRecord, SourceFormat};

const NAMESPACE: &str = "default";
const PORT: u16 = 9080;
const INGRESS_IP: &str = "10.244.0.10";
const LEGACY_IP: &str = "10.244.9.7";

/// A workload and the pod IPs of its replicas.
struct Workload {
    namespace: &'static str,
    name: &'static str,
    ips: &'static [&'static str],
}

static INGRESS: Workload = Workload { namespace: "istio-system", name: "istio-ingressgateway", ips: &[INGRESS_IP] };
static PRODUCTPAGE: Workload =
    Workload { namespace: NAMESPACE, name: "productpage-v1", ips: &["10.244.1.10", "10.244.1.11"] };
static DETAILS: Workload = Workload { namespace: NAMESPACE, name: "details-v1", ips: &["10.244.2.10", "10.244.2.11"] };
static REVIEWS: [Workload; 3] = [
    Workload { namespace: NAMESPACE, name: "reviews-v1", ips: &["10.244.3.10", "10.244.3.11"] },
    Workload { namespace: NAMESPACE, name: "reviews-v2", ips: &["10.244.3.20"] },
    Workload { namespace: NAMESPACE, name: "reviews-v3", ips: &["10.244.3.30"] },
];
static RATINGS: Workload = Workload { namespace: NAMESPACE, name: "ratings-v1", ips: &["10.244.4.10", "10.244.4.11"] };

/// Static files the product page loads through the gateway.
const STATIC_FILES: [&str; 4] = [
    "/static/bootstrap/css/bootstrap.min.css",
    "/static/bootstrap/js/bootstrap.min.js",
    "/static/jquery.min.js",
    "/static/img/izzy.png",
];

/// One hop as both proxies see it.
struct Hop<'a> {
    time_micros: i64,
    request_id: &'a str,
    trace_id: &'a str,
    client: &'a Workload,
    client_ip: &'a str,
    /// Gateway, or a sidecar.
    reporter: Reporter,
    service: &'static str,
    subset: Option<&'static str>,
    server: &'a Workload,
    server_ip: &'a str,
    method: &'static str,
    path: &'a str,
    authority: &'a str,
    route_name: Option<&'static str>,
}

/// An endless, deterministic stream of Bookinfo request records, in batches of whole user requests.
pub struct BookinfoTraffic {
    rng: fastrand::Rng,
    time_micros: i64,
    /// Mean gap between user requests.
    step_micros: i64,
    /// The reviews v3 incident, microseconds since the epoch.
    incident: (i64, i64),
}

impl BookinfoTraffic {
    /// User requests start at `start` and arrive `user_requests_per_sec` per second on average.
    pub fn new(seed: u64, start: DateTime<Utc>, user_requests_per_sec: f64) -> Self {
        let start = start.timestamp_micros();
        let incident_start = start + 30 * 60 * 1_000_000;
        BookinfoTraffic {
            rng: fastrand::Rng::with_seed(seed),
            time_micros: start,
            step_micros: (1e6 / user_requests_per_sec.max(1e-3)).round().max(1.0) as i64,
            incident: (incident_start, incident_start + 2 * 60 * 1_000_000),
        }
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller; 1 - f64() keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - self.rng.f64();
        let u2 = self.rng.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A log-normal latency in milliseconds.
    fn latency(&mut self, median_ms: f64, sigma: f64) -> u64 {
        (median_ms * (sigma * self.normal()).exp()).round().max(0.0) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn pick<'w>(&mut self, workload: &'w Workload) -> &'w str {
        workload.ips[self.rng.usize(0..workload.ips.len())]
    }

    /// Appends the records of the next user request (and, now and then, of the sidecar-less workload).
    pub fn next_into(&mut self, out: &mut Vec<RequestRecord>) {
        // Exponential gaps: a Poisson arrival process.
        self.time_micros += (-(1.0 - self.rng.f64()).ln() * self.step_micros as f64) as i64 + 1;
        let t = self.time_micros;
        let request_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            self.rng.u32(..),
            self.rng.u16(..),
            self.rng.u16(..0x1000),
            0x8000 | self.rng.u16(..0x4000),
            self.rng.u64(..1 << 48)
        );
        let trace_id = format!("{:032x}", self.rng.u128(..));
        if self.chance(0.002) {
            self.legacy_call(t, &request_id, &trace_id, out);
            return;
        }
        let (path, method): (String, &str) = match self.rng.u32(0..1000) {
            0..800 => ("/productpage".into(), "GET"),
            800..900 => (STATIC_FILES[self.rng.usize(0..STATIC_FILES.len())].into(), "GET"),
            900..940 => ("/api/v1/products".into(), "GET"),
            940..955 => ("/login".into(), "POST"),
            955..970 => ("/logout".into(), "GET"),
            970..985 => ("/favicon.ico".into(), "GET"),
            _ => ("/healthz".into(), "GET"),
        };
        let product_ip = self.pick(&PRODUCTPAGE);
        let hop = Hop {
            time_micros: t,
            request_id: &request_id,
            trace_id: &trace_id,
            client: &INGRESS,
            client_ip: INGRESS_IP,
            reporter: Reporter::Gateway,
            service: "productpage",
            subset: None,
            server: &PRODUCTPAGE,
            server_ip: product_ip,
            method,
            path: &path,
            authority: "bookinfo.example.com",
            route_name: None,
        };
        if path == "/favicon.ico" || path == "/healthz" {
            // No gateway route matches: Envoy answers 404 NR itself.
            let mut record = self.client_record(&hop, Some(404), &["NR"], 0, 1);
            record.direction = Direction::Unknown;
            for field in [&mut record.upstream_cluster, &mut record.upstream_host, &mut record.destination_service] {
                *field = None;
            }
            record.destination_workload = None;
            record.destination_namespace = None;
            record.destination_port = None;
            record.response_code_details = Some("route_not_found".into());
            out.push(record);
            return;
        }
        let mut work_ms = self.latency(if path.starts_with("/static") { 2.0 } else { 18.0 }, 0.35);
        let mut status = 200;
        if path == "/productpage" {
            let (details_ms, _) = self.call_details(t + 2_000, &request_id, &trace_id, product_ip, out);
            let (reviews_ms, reviews_status) =
                self.call_reviews(t + 3_000 + details_ms as i64 * 1000, &request_id, &trace_id, product_ip, out);
            work_ms += details_ms + reviews_ms;
            if reviews_status >= 500 {
                // The page renders without reviews ("Sorry, product reviews are currently unavailable").
                status = 200;
            }
        }
        let mut tries = 1;
        if method == "POST" && self.chance(0.02) {
            // The first try of a login fails with 503; Istio's default policy retries it.
            let first = self.latency(5.0, 0.3);
            out.push(self.server_record(&hop, t + 500, Some(503), first, Mtls::Mutual));
            tries = 2;
        }
        out.push(self.server_record(&hop, t + 1_000, Some(status), work_ms, Mtls::Mutual));
        out.push(self.client_record(&hop, Some(status), &[], work_ms + 1, tries));
    }

    /// productpage -> details: client duration and status.
    fn call_details(
        &mut self,
        t: i64,
        id: &str,
        trace: &str,
        from_ip: &str,
        out: &mut Vec<RequestRecord>,
    ) -> (u64, u16) {
        let server_ip = self.pick(&DETAILS);
        let hop = Hop {
            time_micros: t,
            request_id: id,
            trace_id: trace,
            client: &PRODUCTPAGE,
            client_ip: from_ip,
            reporter: Reporter::Source,
            service: "details",
            subset: None,
            server: &DETAILS,
            server_ip,
            method: "GET",
            path: "/details/0",
            authority: "details:9080",
            route_name: Some("default"),
        };
        if self.chance(0.002) {
            // Connection refused on every try: no server record.
            let ms = self.latency(3.0, 0.3);
            out.push(self.client_record(&hop, Some(503), &["UF", "URX"], ms, 3));
            return (ms, 503);
        }
        let ms = self.latency(4.0, 0.5);
        out.push(self.server_record(&hop, t + 500, Some(200), ms, Mtls::Mutual));
        out.push(self.client_record(&hop, Some(200), &[], ms + 1, 1));
        (ms + 1, 200)
    }

    /// productpage -> reviews (and reviews v2/v3 -> ratings): client duration and status.
    fn call_reviews(
        &mut self,
        t: i64,
        id: &str,
        trace: &str,
        from_ip: &str,
        out: &mut Vec<RequestRecord>,
    ) -> (u64, u16) {
        let version = match self.rng.u32(0..100) {
            0..52 => 0,
            52..81 => 1,
            _ => 2,
        };
        let server = &REVIEWS[version];
        let server_ip = self.pick(server);
        let hop = Hop {
            time_micros: t,
            request_id: id,
            trace_id: trace,
            client: &PRODUCTPAGE,
            client_ip: from_ip,
            reporter: Reporter::Source,
            service: "reviews",
            subset: Some(["v1", "v2", "v3"][version]),
            server,
            server_ip,
            method: "GET",
            path: "/reviews/0",
            authority: "reviews:9080",
            route_name: None,
        };
        if self.chance(0.0005) {
            out.push(self.client_record(&hop, Some(503), &["UO"], 0, 1));
            return (0, 503);
        }
        let mut ms = self.latency(12.0, 0.4);
        if version > 0 {
            ms += self.call_ratings(t + 1_500, id, trace, server, server_ip, out);
        }
        let in_incident = (self.incident.0..self.incident.1).contains(&t);
        let failure_rate = match (version, in_incident) {
            (2, true) => 0.3,
            (2, false) => 0.005,
            _ => 0.0,
        };
        let status = if self.chance(failure_rate) { 500 } else { 200 };
        out.push(self.server_record(&hop, t + 500, Some(status), ms, Mtls::Mutual));
        out.push(self.client_record(&hop, Some(status), &[], ms + 1, 1));
        (ms + 1, status)
    }

    /// reviews -> ratings through the `ratings-default` route (500 ms timeout, 2 retries on 5xx): the
    /// client's duration.
    fn call_ratings(
        &mut self,
        t: i64,
        id: &str,
        trace: &str,
        client: &Workload,
        client_ip: &str,
        out: &mut Vec<RequestRecord>,
    ) -> u64 {
        let server_ip = self.pick(&RATINGS);
        let hop = Hop {
            time_micros: t,
            request_id: id,
            trace_id: trace,
            client,
            client_ip,
            reporter: Reporter::Source,
            service: "ratings",
            subset: Some("v1"),
            server: &RATINGS,
            server_ip,
            method: "GET",
            path: "/ratings/0",
            authority: "ratings:9080",
            route_name: Some("ratings-default"),
        };
        let mut elapsed = 0;
        let mut tries = 1;
        if self.chance(0.004) {
            let first = self.latency(2.0, 0.3);
            out.push(self.server_record(&hop, t + 300, Some(503), first, Mtls::Mutual));
            elapsed += first + 1;
            tries = 2;
        }
        let ms = if self.chance(0.003) { self.latency(300.0, 0.6) } else { self.latency(3.0, 0.6) };
        out.push(self.server_record(&hop, t + 300 + elapsed as i64 * 1000, Some(200), ms, Mtls::Mutual));
        if elapsed + ms >= 500 {
            out.push(self.client_record(&hop, Some(504), &["UT"], 500, tries));
            return 500;
        }
        out.push(self.client_record(&hop, Some(200), &[], elapsed + ms + 1, tries));
        elapsed + ms + 1
    }

    /// The sidecar-less workload calls details or ratings in plaintext: only the server logs it, and
    /// nothing in the configuration names its IP.
    fn legacy_call(&mut self, t: i64, id: &str, trace: &str, out: &mut Vec<RequestRecord>) {
        const LEGACY: Workload = Workload { namespace: NAMESPACE, name: "legacy", ips: &[LEGACY_IP] };
        let (service, server, path) =
            if self.rng.bool() { ("details", &DETAILS, "/details/7") } else { ("ratings", &RATINGS, "/ratings/7") };
        let server_ip = self.pick(server);
        let authority = format!("{service}:{PORT}");
        let hop = Hop {
            time_micros: t,
            request_id: id,
            trace_id: trace,
            client: &LEGACY,
            client_ip: LEGACY_IP,
            reporter: Reporter::Source,
            service,
            subset: None,
            server,
            server_ip,
            method: "GET",
            path,
            authority: &authority,
            route_name: None,
        };
        let ms = self.latency(4.0, 0.5);
        let mut record = self.server_record(&hop, t, Some(200), ms, Mtls::Plaintext);
        record.source_workload = None;
        record.source_namespace = None;
        out.push(record);
    }

    fn base(&mut self, hop: &Hop<'_>, time_micros: i64, status: Option<u16>, duration_ms: u64) -> RequestRecord {
        RequestRecord {
            timestamp: DateTime::from_timestamp_micros(time_micros).unwrap_or_default(),
            duration_ms: Some(duration_ms),
            upstream_service_time_ms: status.filter(|s| *s < 504).map(|_| duration_ms.saturating_sub(1)),
            method: Some(hop.method.into()),
            path: Some(hop.path.into()),
            protocol: Some("HTTP/1.1".into()),
            authority: Some(hop.authority.into()),
            status,
            response_flags: Vec::new(),
            response_code_details: Some("via_upstream".into()),
            bytes_received: Some(if hop.method == "POST" { self.rng.u64(100..600) } else { 0 }),
            bytes_sent: Some(self.rng.u64(200..6_000)),
            request_id: Some(hop.request_id.into()),
            trace_id: Some(hop.trace_id.into()),
            span_id: Some(format!("{:016x}", self.rng.u64(..))),
            user_agent: Some(
                if hop.reporter == Reporter::Gateway {
                    "Mozilla/5.0 (X11; Linux x86_64)"
                } else {
                    "python-requests/2.31"
                }
                .into(),
            ),
            x_forwarded_for: None,
            reporter: hop.reporter,
            direction: Direction::Outbound,
            upstream_cluster: None,
            upstream_host: Some(format!("{}:{PORT}", hop.server_ip)),
            downstream_local_address: None,
            downstream_remote_address: None,
            requested_server_name: None,
            route_name: hop.route_name.map(Into::into),
            destination_service: Some(format!("{}.{NAMESPACE}.svc.cluster.local", hop.service)),
            destination_port: Some(PORT),
            destination_subset: hop.subset.map(Into::into),
            destination_namespace: Some(hop.server.namespace.into()),
            destination_workload: Some(hop.server.name.into()),
            destination_principal: None,
            source_workload: Some(hop.client.name.into()),
            source_namespace: Some(hop.client.namespace.into()),
            source_principal: None,
            mtls: Mtls::Unknown,
            tls_version: None,
            attempts: None,
            source_format: SourceFormat::IstioText,
        }
    }

    fn client_record(
        &mut self,
        hop: &Hop<'_>,
        status: Option<u16>,
        flags: &[&str],
        duration_ms: u64,
        tries: u32,
    ) -> RequestRecord {
        let mut record = self.base(hop, hop.time_micros, status, duration_ms);
        record.response_flags = flags.iter().map(|f| (*f).to_owned()).collect();
        if !flags.is_empty() {
            record.response_code_details = Some("upstream_reset_before_response_started".into());
        }
        record.upstream_cluster =
            Some(format!("outbound|{PORT}|{}|{}.{NAMESPACE}.svc.cluster.local", hop.subset.unwrap_or(""), hop.service));
        record.downstream_local_address = Some(format!("10.96.0.{}:{PORT}", hop.service.len()));
        record.downstream_remote_address = Some(format!("{}:{}", hop.client_ip, self.rng.u16(30_000..60_000)));
        record.attempts = Some(tries);
        record
    }

    fn server_record(
        &mut self,
        hop: &Hop<'_>,
        time_micros: i64,
        status: Option<u16>,
        duration_ms: u64,
        mtls: Mtls,
    ) -> RequestRecord {
        let mut record = self.base(hop, time_micros, status, duration_ms);
        record.reporter = Reporter::Destination;
        record.direction = Direction::Inbound;
        record.upstream_cluster = Some(format!("inbound|{PORT}||"));
        record.upstream_host = Some(format!("{}:{PORT}", hop.server_ip));
        record.downstream_local_address = Some(format!("{}:{PORT}", hop.server_ip));
        record.downstream_remote_address = Some(format!("{}:{}", hop.client_ip, self.rng.u16(30_000..60_000)));
        record.route_name = Some("default".into());
        record.destination_subset = None;
        if mtls == Mtls::Mutual {
            record.requested_server_name =
                Some(format!("outbound_.{PORT}_._.{}.{NAMESPACE}.svc.cluster.local", hop.service));
            record.tls_version = Some("TLSv1.3".into());
            record.source_principal = Some(format!(
                "spiffe://cluster.local/ns/{}/sa/{}",
                hop.client.namespace,
                hop.client.name.rsplit_once("-v").map_or(hop.client.name, |(app, _)| app)
            ));
        }
        record.mtls = mtls;
        record
    }
}
