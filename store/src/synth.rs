//! Synthetic telemetry for tests and benchmarks (not meant for production data paths).
//!
//! A fixed mesh of 20 client workloads calling 15 services (each workload calls 3-4 of them). Each edge
//! has its own log-normal latency (medians 2-120 ms, heavy tails), error rate and retry behaviour, so
//! group-by-edge and percentile queries produce realistic, distinct answers. Everything is derived from
//! the seed: the same seed gives the same records.

use chrono::{DateTime, Utc};
use meshlens_model::record::{Direction, Mtls, Reporter, RequestRecord, SourceFormat};
use meshlens_model::span::{SpanKind, SpanRecord, SpanStatus};

/// Client workloads (`source_workload`).
pub const WORKLOADS: [&str; 20] = [
    "productpage-v1",
    "frontend",
    "checkout",
    "cart",
    "recommendation",
    "ad",
    "shipping",
    "currency",
    "email",
    "payment",
    "quote",
    "fraud-detection",
    "accounting",
    "image-provider",
    "load-generator",
    "search",
    "notifications",
    "auth",
    "inventory",
    "gateway",
];

/// Called services (`destination_service` short names, namespace `default`).
pub const SERVICES: [&str; 15] = [
    "reviews",
    "ratings",
    "details",
    "catalog",
    "cart",
    "checkout",
    "payment",
    "shipping",
    "currency",
    "users",
    "auth",
    "inventory",
    "search",
    "orders",
    "prices",
];

#[derive(Debug, Clone)]
struct Edge {
    source: usize,
    service: usize,
    median_ms: f64,
    sigma: f64,
    error_rate: f64,
}

/// An endless, deterministic stream of request records with increasing timestamps.
#[derive(Debug, Clone)]
pub struct RequestGenerator {
    rng: fastrand::Rng,
    edges: Vec<Edge>,
    time_micros: i64,
    step_micros: i64,
}

impl RequestGenerator {
    /// Records start at `start` and arrive at about `rate_per_sec` (timestamps only; nothing sleeps).
    pub fn new(seed: u64, start: DateTime<Utc>, rate_per_sec: u32) -> Self {
        // The topology uses its own fixed seed so that every generator sees the same mesh.
        let mut topology = fastrand::Rng::with_seed(0x6d65_7368);
        let mut edges = Vec::new();
        for source in 0..WORKLOADS.len() {
            for _ in 0..3 + topology.usize(0..2) {
                let service = topology.usize(0..SERVICES.len());
                if edges.iter().any(|e: &Edge| e.source == source && e.service == service) {
                    continue;
                }
                edges.push(Edge {
                    source,
                    service,
                    median_ms: 2.0 + 118.0 * topology.f64().powi(2),
                    sigma: 0.3 + 0.6 * topology.f64(),
                    error_rate: 0.001 + 0.03 * topology.f64().powi(3),
                });
            }
        }
        RequestGenerator {
            rng: fastrand::Rng::with_seed(seed),
            edges,
            time_micros: start.timestamp_micros(),
            step_micros: (1_000_000 / i64::from(rate_per_sec.max(1))).max(1),
        }
    }

    /// The next `n` records.
    pub fn batch(&mut self, n: usize) -> Vec<RequestRecord> {
        self.by_ref().take(n).collect()
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller; 1 - f64() keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - self.rng.f64();
        let u2 = self.rng.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn record(&mut self) -> RequestRecord {
        let edge = self.edges[self.rng.usize(0..self.edges.len())].clone();
        self.time_micros += self.rng.i64(0..=2 * self.step_micros);
        let timestamp = DateTime::<Utc>::from_timestamp_micros(self.time_micros).unwrap_or_default();
        let source = WORKLOADS[edge.source];
        let service = SERVICES[edge.service];
        let fqdn = format!("{service}.default.svc.cluster.local");
        let duration = (edge.median_ms * (edge.sigma * self.normal()).exp()).round().max(0.0) as u64;
        let failed = self.rng.f64() < edge.error_rate;
        let (status, flags, details) = if !failed {
            (Some(200), Vec::new(), "via_upstream")
        } else {
            match self.rng.u8(0..4) {
                0 => (Some(503), vec!["UF".to_string(), "URX".to_string()], "upstream_reset_before_response_started"),
                1 => (Some(503), vec!["UO".to_string()], "overflow"),
                2 => (Some(504), vec!["UT".to_string()], "response_timeout"),
                _ => (Some(500), Vec::new(), "via_upstream"),
            }
        };
        let method = match self.rng.u8(0..20) {
            0..=15 => "GET",
            16..=18 => "POST",
            _ => "PUT",
        };
        let port = 9080 + edge.service as u16;
        let pod_ip = format!("10.{}.{}.{}", 10 + edge.service, self.rng.u8(0..4), self.rng.u8(1..250));
        RequestRecord {
            timestamp,
            duration_ms: Some(duration),
            upstream_service_time_ms: status.filter(|s| *s < 504).map(|_| duration.saturating_sub(1)),
            method: Some(method.into()),
            path: Some(format!("/api/v1/{service}/{}", self.rng.u16(0..500))),
            protocol: Some(if self.rng.bool() { "HTTP/2" } else { "HTTP/1.1" }.into()),
            authority: Some(format!("{service}:{port}")),
            status,
            response_flags: flags,
            response_code_details: Some(details.into()),
            bytes_received: Some(if method == "GET" { 0 } else { self.rng.u64(100..4000) }),
            bytes_sent: Some(self.rng.u64(200..20_000)),
            request_id: Some(format!("{:032x}", self.rng.u128(..))),
            trace_id: Some(format!("{:032x}", self.rng.u128(..))),
            span_id: Some(format!("{:016x}", self.rng.u64(..))),
            user_agent: Some("Go-http-client/1.1".into()),
            x_forwarded_for: None,
            reporter: Reporter::Source,
            direction: Direction::Outbound,
            upstream_cluster: Some(format!("outbound|{port}||{fqdn}")),
            upstream_host: Some(format!("{pod_ip}:{port}")),
            downstream_local_address: Some(format!("10.96.0.{}:{port}", edge.service + 10)),
            downstream_remote_address: Some(format!(
                "10.{}.1.{}:{}",
                40 + edge.source,
                1 + edge.source,
                self.rng.u16(30000..60000)
            )),
            requested_server_name: Some(format!("outbound_.{port}_._.{fqdn}")),
            route_name: Some("default".into()),
            destination_service: Some(fqdn),
            destination_port: Some(port),
            destination_subset: Some("v1".into()),
            destination_namespace: Some("default".into()),
            destination_workload: Some(format!("{service}-v1")),
            destination_principal: Some(format!("spiffe://cluster.local/ns/default/sa/{service}")),
            source_workload: Some(source.into()),
            source_namespace: Some("default".into()),
            source_principal: Some(format!("spiffe://cluster.local/ns/default/sa/{source}")),
            mtls: if self.rng.u8(0..20) == 0 { Mtls::Plaintext } else { Mtls::Mutual },
            tls_version: Some("TLSv1.3".into()),
            attempts: Some(if status == Some(503) && self.rng.bool() { 2 } else { 1 }),
            source_format: SourceFormat::EnvoyAls,
        }
    }
}

impl Iterator for RequestGenerator {
    type Item = RequestRecord;

    fn next(&mut self) -> Option<RequestRecord> {
        Some(self.record())
    }
}

/// The server span that matches a request record (same trace, span id and timing), for join tests.
pub fn span_for(record: &RequestRecord) -> SpanRecord {
    let duration_ms = record.duration_ms.unwrap_or(0) as f64;
    let service = record.destination_service.as_deref().and_then(|s| s.split('.').next()).map(str::to_owned);
    SpanRecord {
        trace_id: record.trace_id.clone().unwrap_or_default(),
        span_id: record.span_id.clone().unwrap_or_default(),
        parent_span_id: None,
        name: format!("{} {}", record.method.as_deref().unwrap_or("GET"), record.path.as_deref().unwrap_or("/")),
        kind: SpanKind::Server,
        start_time: record.timestamp,
        end_time: record.timestamp + chrono::Duration::milliseconds(duration_ms as i64),
        duration_ms,
        status_code: if record.status.is_some_and(|s| s >= 500) { SpanStatus::Error } else { SpanStatus::Unset },
        status_message: None,
        service_name: service,
        service_namespace: record.destination_namespace.clone(),
        http_method: record.method.clone(),
        http_status_code: record.status,
        http_url: record.path.clone(),
        http_route: None,
        peer_service: record.source_workload.clone(),
        upstream_cluster: record.upstream_cluster.clone(),
        request_id: record.request_id.clone(),
        attributes: [("component".to_string(), "proxy".to_string())].into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_covers_the_mesh() {
        let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap().to_utc();
        let a = RequestGenerator::new(1, start, 1000).batch(5000);
        assert_eq!(a, RequestGenerator::new(1, start, 1000).batch(5000));
        let workloads: std::collections::HashSet<_> = a.iter().filter_map(|r| r.source_workload.clone()).collect();
        let services: std::collections::HashSet<_> = a.iter().filter_map(|r| r.destination_service.clone()).collect();
        assert_eq!(workloads.len(), WORKLOADS.len());
        assert!(services.len() >= 12, "most services are called: {}", services.len());
        assert!(a.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        assert!(a.iter().any(|r| r.status == Some(503)));
    }
}
