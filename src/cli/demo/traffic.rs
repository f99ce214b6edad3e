//! The demo's traffic generator: users of the shop through the ingress gateway, and the legacy report job
//! calling details directly in plaintext. It counts what it sent and what came back, so that the summary
//! (and the end-to-end test) can hold the analyses to it: every plaintext request it got an answer to was
//! logged by details' sidecar and must show up as plaintext in the mTLS coverage.

use super::http::{Body, call, client};
use http::{Method, Request};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Requests in flight at most; beyond that the generator waits (a stalled mesh slows it down rather than
/// piling up connections).
const MAX_IN_FLIGHT: usize = 64;

/// The kinds of request, with their share of the mix in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `GET /productpage?id=N` through the ingress: productpage, details, reviews (and ratings for v2/v3).
    Page,
    /// `GET /api/v1/products/N` through the ingress: productpage and details.
    Product,
    /// `POST /api/v1/products/N/ratings` through the ingress: productpage and ratings.
    Rate,
    /// `GET /details/N` from legacy/report-job straight to details' sidecar, in plaintext.
    LegacyPlaintext,
}

impl Kind {
    const MIX: [(Kind, u32); 4] = [(Kind::Page, 70), (Kind::Product, 15), (Kind::Rate, 5), (Kind::LegacyPlaintext, 10)];

    fn draw(rng: &mut fastrand::Rng) -> Kind {
        let mut n = rng.u32(0..100);
        for (kind, share) in Self::MIX {
            if n < share {
                return kind;
            }
            n -= share;
        }
        Kind::Page
    }
}

/// Where the generator sends.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The ingress gateway's HTTP listener.
    pub ingress: SocketAddr,
    /// details' inbound listener (its workload address and port).
    pub details: SocketAddr,
    /// The legacy job's own address, which its plaintext connections leave from.
    pub legacy_source: IpAddr,
}

/// What was sent of one kind and how it was answered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindCounts {
    pub sent: u64,
    /// Requests that got an HTTP answer (any status).
    pub answered: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused, reset, timed out).
    pub failed: u64,
}

/// The generator's record of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficCounts {
    pub by_kind: BTreeMap<Kind, KindCounts>,
    /// Answered requests sent through the ingress (each one reached productpage over mTLS).
    pub ingress_answered: u64,
    /// Answered plaintext requests: each is one plaintext request logged by details' sidecar.
    pub plaintext_answered: u64,
}

impl TrafficCounts {
    fn record(&mut self, kind: Kind, answer: Option<u16>) {
        let counts = self.by_kind.entry(kind).or_default();
        counts.sent += 1;
        match answer {
            Some(status) => {
                counts.answered += 1;
                *counts.statuses.entry(status).or_default() += 1;
                if kind == Kind::LegacyPlaintext {
                    self.plaintext_answered += 1;
                } else {
                    self.ingress_answered += 1;
                }
            }
            None => counts.failed += 1,
        }
    }

    pub fn sent(&self) -> u64 {
        self.by_kind.values().map(|c| c.sent).sum()
    }
}

/// Sends `rate` requests per second until `stop` turns true, then waits for the requests in flight and
/// returns the counts.
pub async fn run(targets: Targets, rate: f64, seed: u64, mut stop: watch::Receiver<bool>) -> TrafficCounts {
    let counts = Arc::new(Mutex::new(TrafficCounts::default()));
    let mesh_client = client(None);
    let legacy_client = client(Some(targets.legacy_source));
    let mut rng = fastrand::Rng::with_seed(seed);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
        let kind = Kind::draw(&mut rng);
        let product = rng.u32(0..10);
        let (client, request) = match request(kind, product, &targets) {
            Some(request) if kind == Kind::LegacyPlaintext => (legacy_client.clone(), request),
            Some(request) => (mesh_client.clone(), request),
            None => continue,
        };
        let counts = Arc::clone(&counts);
        in_flight.spawn(async move {
            let answer = call(&client, request).await.ok().map(|(status, _)| status.as_u16());
            counts.lock().unwrap_or_else(|e| e.into_inner()).record(kind, answer);
            drop(slot);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn request(kind: Kind, product: u32, targets: &Targets) -> Option<Request<Body>> {
    let (method, addr, host, path, body) = match kind {
        Kind::Page => (Method::GET, targets.ingress, "bookinfo.demo", format!("/productpage?id={product}"), ""),
        Kind::Product => (Method::GET, targets.ingress, "bookinfo.demo", format!("/api/v1/products/{product}"), ""),
        Kind::Rate => (
            Method::POST,
            targets.ingress,
            "bookinfo.demo",
            format!("/api/v1/products/{product}/ratings"),
            r#"{"stars":5}"#,
        ),
        Kind::LegacyPlaintext => {
            (Method::GET, targets.details, "details.bookinfo:9080", format!("/details/{product}"), "")
        }
    };
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .header("user-agent", if kind == Kind::LegacyPlaintext { "report-job/1.0" } else { "meshlens-demo" })
        .header("content-type", "application/json")
        .body(Body::new(bytes::Bytes::from_static(body.as_bytes())))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_to_a_hundred_and_each_kind_is_drawn() {
        assert_eq!(Kind::MIX.iter().map(|(_, share)| share).sum::<u32>(), 100);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut drawn = BTreeMap::<Kind, u32>::new();
        for _ in 0..10_000 {
            *drawn.entry(Kind::draw(&mut rng)).or_default() += 1;
        }
        for (kind, share) in Kind::MIX {
            let observed = drawn[&kind] as f64 / 100.0;
            assert!((observed - f64::from(share)).abs() < 2.0, "{kind:?}: {observed}% drawn, {share}% planned");
        }
    }
}
