//! mTLS coverage: per edge (source workload → destination service), per destination namespace and overall,
//! how many requests were mutual, plaintext or unknown, beside the configured PeerAuthentication mode.
//!
//! Only the server side can see mTLS in a text access log (an Istio `outbound_.` SNI, or none for
//! plaintext); a client's outbound record is `unknown`. So client and server records of the same request
//! (same `x-request-id` and destination service) are paired ([`pass`](super::pass)): a pair counts
//! once, with the server's verdict, and settles the client's `unknown`. Records without a partner count on
//! their own. A retried request is logged once by the client and once per try by the server, so it counts
//! once per try: each try is a connection that was, or was not, mutually authenticated.
//!
//! The pairing also gives each edge's errors and latency (the client's status and duration when it logged
//! the request, else the server's), so an edge here is also an edge of the service graph.

use super::codes::{ML2001, ML2002, ML2003};
use super::stats::{Histogram, Latency};
use super::{TrafficOptions, find_workload, finding, service_resource, workload_label};
use crate::Finding;
use meshlens_model::mesh::meta::labels_match;
use meshlens_model::mesh::networking::ClientTlsMode;
use meshlens_model::mesh::security::MtlsMode;
use meshlens_model::mesh::{Kind, MeshConfig, WorkloadRef};
use meshlens_model::names::{ClusterDirection, ClusterName, service_fqdn_parts};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Requests by what was observed about their mTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub mutual: u64,
    pub plaintext: u64,
    pub unknown: u64,
    /// Client-side `unknown`s settled by the server's record of the same request (included in `mutual`
    /// and `plaintext`).
    pub resolved_by_pairing: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.mutual += other.mutual;
        self.plaintext += other.plaintext;
        self.unknown += other.unknown;
        self.resolved_by_pairing += other.resolved_by_pairing;
    }
}

/// How observed traffic compares with the configured mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// Plaintext arrived where STRICT is configured (ML2001).
    Violation,
    /// PERMISSIVE, and plaintext was observed (ML2002).
    AtRisk,
    /// PERMISSIVE, but everything observed (at least the minimum number of requests) was mutual (ML2003).
    ReadyToTighten,
    /// What was observed is what the configuration allows.
    Compliant,
}

/// What the configuration says about an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Configured {
    /// Effective PeerAuthentication mode of the destination workloads (workload policy, then namespace,
    /// then mesh; PERMISSIVE by default). With several destination workloads in different modes, the
    /// weakest, which is the one plaintext can reach.
    pub peer_authentication: &'static str,
    /// `trafficPolicy.tls.mode` of the DestinationRule the client uses, when it sets one.
    pub client_tls: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// `namespace/workload` of the client; `unknown@IP` when only the server logged the request and no
    /// workload in the configuration has the peer's IP; `unknown` when not even that is known.
    pub source: String,
    pub source_namespace: Option<String>,
    /// Destination service FQDN, or `namespace/workload` when only the server's workload is known.
    pub destination: String,
    pub destination_namespace: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Requests with status 5xx or no response.
    pub errors: u64,
    /// Exact percentiles of the requests' durations.
    pub latency: Option<Latency>,
    pub configured: Configured,
    pub classification: Classification,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceCoverage {
    /// The destination namespace.
    pub namespace: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The configured modes of the edges into the namespace.
    pub modes: BTreeSet<&'static str>,
    /// The most severe classification of its edges; `ready_to_tighten` only when every edge into the
    /// namespace is PERMISSIVE, the namespace received at least the minimum requests and all were mutual.
    pub classification: Classification,
    /// Sources of plaintext into the namespace, with their request counts.
    pub plaintext_sources: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MtlsReport {
    pub overall: Counts,
    pub namespaces: Vec<NamespaceCoverage>,
    pub edges: Vec<Edge>,
    /// The minimum all-mutual requests for `ready_to_tighten`.
    pub strict_ready_min_requests: u64,
}

/// Requests of an edge with one observed mTLS value, as the pairing counted them.
#[derive(Debug)]
pub(super) struct EdgeRow {
    key: EdgeKey,
    resolved: u64,
    requests: u64,
    errors: u64,
    durations: Histogram,
}

impl EdgeRow {
    pub(super) fn new(key: EdgeKey) -> EdgeRow {
        EdgeRow { key, resolved: 0, requests: 0, errors: 0, durations: Histogram::default() }
    }

    /// Counts `requests` that took `duration_ms`, of which `resolved` settled a client's `unknown` and
    /// `errors` failed.
    pub(super) fn add(&mut self, requests: u64, resolved: u64, errors: u64, duration_ms: Option<u64>) {
        self.requests += requests;
        self.resolved += resolved;
        self.errors += errors;
        if let Some(duration) = duration_ms {
            self.durations.add(duration, requests);
        }
    }
}

impl std::ops::Deref for EdgeRow {
    type Target = EdgeKey;

    fn deref(&self) -> &EdgeKey {
        &self.key
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct EdgeKey {
    pub(super) source_namespace: Option<String>,
    pub(super) source_workload: Option<String>,
    /// The peer's IP, when no workload is known for it.
    pub(super) source_address: Option<String>,
    pub(super) destination_service: Option<String>,
    pub(super) destination_namespace: Option<String>,
    pub(super) destination_workload: Option<String>,
    /// The server's inbound cluster (`inbound|8080||`): its port is the workload port that
    /// PeerAuthentication `portLevelMtls` is keyed by (the SNI and `destination_port` carry the service port).
    pub(super) server_cluster: Option<String>,
    pub(super) mtls: String,
}

/// What the rows of one edge add up to.
struct EdgeTotals {
    namespace: Option<String>,
    source_namespace: Option<String>,
    counts: Counts,
    errors: u64,
    durations: Histogram,
    /// The weakest mode any of its rows arrived under.
    mode: MtlsMode,
    client_tls: Option<ClientTlsMode>,
}

fn mode_rank(mode: MtlsMode) -> u8 {
    match mode {
        MtlsMode::Disable => 0,
        MtlsMode::Unset | MtlsMode::Permissive => 1,
        MtlsMode::Strict => 2,
    }
}

/// The effective PeerAuthentication mode where an edge's requests arrive: the named destination workload
/// when the records say, else every workload the destination Service selects, else its namespace.
fn configured_mode(mesh: &MeshConfig, workloads: &[WorkloadRef], row: &EdgeRow) -> MtlsMode {
    let port = row
        .server_cluster
        .as_deref()
        .and_then(|c| c.parse::<ClusterName>().ok())
        .filter(|c| c.direction == ClusterDirection::Inbound)
        .map(|c| c.port);
    let named = match (&row.destination_namespace, &row.destination_workload) {
        (Some(ns), Some(name)) => find_workload(workloads, ns, name),
        _ => None,
    };
    let mut targets: Vec<&WorkloadRef> = named.into_iter().collect();
    if targets.is_empty()
        && let Some(service) = row.destination_service.as_deref().and_then(|host| mesh.service_by_host(host))
        && let Some(selector) = &service.spec.selector
    {
        targets = workloads
            .iter()
            .filter(|w| w.namespace == service.metadata.ns() && labels_match(selector, &w.labels))
            .collect();
    }
    if targets.is_empty() {
        let namespace = row
            .destination_namespace
            .as_deref()
            .or_else(|| row.destination_service.as_deref().and_then(service_fqdn_parts).map(|(_, ns)| ns))
            .unwrap_or("default");
        return mesh.peer_authentication_mode(namespace, &BTreeMap::new(), port);
    }
    targets
        .into_iter()
        .map(|w| mesh.peer_authentication_mode(&w.namespace, &w.labels, port))
        .min_by_key(|mode| mode_rank(*mode))
        .unwrap_or(MtlsMode::Permissive)
}

fn classify(mode: MtlsMode, counts: &Counts, min_requests: u64) -> Classification {
    match mode {
        MtlsMode::Strict if counts.plaintext > 0 => Classification::Violation,
        MtlsMode::Permissive | MtlsMode::Unset if counts.plaintext > 0 => Classification::AtRisk,
        MtlsMode::Permissive | MtlsMode::Unset
            if counts.requests >= min_requests && counts.mutual == counts.requests =>
        {
            Classification::ReadyToTighten
        }
        _ => Classification::Compliant,
    }
}

/// Reads the paired requests against the configured modes.
pub(super) fn analyze(mesh: &MeshConfig, rows: &[EdgeRow], options: &TrafficOptions) -> (MtlsReport, Vec<Finding>) {
    let workloads = mesh.workloads();
    let mut edges: BTreeMap<(String, String), EdgeTotals> = BTreeMap::new();
    for row in rows {
        let destination = match (&row.destination_service, &row.destination_workload) {
            (Some(service), _) => service.clone(),
            (None, Some(_)) => {
                workload_label(row.destination_namespace.as_deref(), row.destination_workload.as_deref())
            }
            (None, None) => continue,
        };
        let source = match (&row.source_workload, &row.source_address) {
            (None, Some(address)) => format!("unknown@{address}"),
            _ => workload_label(row.source_namespace.as_deref(), row.source_workload.as_deref()),
        };
        let mode = configured_mode(mesh, &workloads, row);
        let client_tls = row.destination_service.as_deref().and_then(|host| {
            let client_namespace = row.source_namespace.as_deref().unwrap_or("default");
            mesh.destination_rule_for(host, client_namespace)?.spec.traffic_policy.as_ref()?.tls.as_ref()?.mode
        });
        let counts = Counts {
            requests: row.requests,
            mutual: if row.mtls == "mutual" { row.requests } else { 0 },
            plaintext: if row.mtls == "plaintext" { row.requests } else { 0 },
            unknown: if row.mtls == "unknown" { row.requests } else { 0 },
            resolved_by_pairing: row.resolved,
        };
        let totals = edges.entry((source, destination)).or_insert_with(|| EdgeTotals {
            namespace: None,
            source_namespace: row.source_namespace.clone(),
            counts: Counts::default(),
            errors: 0,
            durations: Histogram::default(),
            mode,
            client_tls,
        });
        totals.counts.add(&counts);
        totals.errors += row.errors;
        totals.durations.merge(&row.durations);
        if mode_rank(mode) < mode_rank(totals.mode) {
            totals.mode = mode;
        }
        if totals.namespace.is_none() {
            totals.namespace.clone_from(&row.destination_namespace);
        }
    }

    let min_requests = options.strict_ready_min_requests;
    let mut report = MtlsReport {
        overall: Counts::default(),
        namespaces: Vec::new(),
        edges: Vec::new(),
        strict_ready_min_requests: min_requests,
    };
    let mut namespaces: BTreeMap<String, NamespaceCoverage> = BTreeMap::new();
    for (
        (source, destination),
        EdgeTotals { namespace, source_namespace, counts, errors, durations, mode, client_tls },
    ) in edges
    {
        let classification = classify(mode, &counts, min_requests);
        report.overall.add(&counts);
        if let Some(namespace) = &namespace {
            let coverage = namespaces.entry(namespace.clone()).or_insert_with(|| NamespaceCoverage {
                namespace: namespace.clone(),
                counts: Counts::default(),
                modes: BTreeSet::new(),
                classification: Classification::Compliant,
                plaintext_sources: BTreeMap::new(),
            });
            coverage.counts.add(&counts);
            coverage.modes.insert(mode.as_str());
            coverage.classification = coverage.classification.min(classification);
            if counts.plaintext > 0 {
                *coverage.plaintext_sources.entry(source.clone()).or_default() += counts.plaintext;
            }
        }
        report.edges.push(Edge {
            source,
            source_namespace,
            destination,
            destination_namespace: namespace,
            counts,
            errors,
            latency: Latency::of(&durations),
            configured: Configured {
                peer_authentication: mode.as_str(),
                client_tls: client_tls.map(ClientTlsMode::as_str),
            },
            classification,
        });
    }
    for coverage in namespaces.values_mut() {
        // A namespace is ready only as a whole: one PERMISSIVE edge with too little traffic, or one STRICT
        // edge, does not make the others' evidence count for the namespace policy.
        let all_permissive = coverage.modes.iter().all(|m| *m == MtlsMode::Permissive.as_str());
        let all_mutual = coverage.counts.mutual == coverage.counts.requests;
        coverage.classification = match coverage.classification {
            Classification::Violation | Classification::AtRisk => coverage.classification,
            _ if all_permissive && all_mutual && coverage.counts.requests >= min_requests => {
                Classification::ReadyToTighten
            }
            _ => Classification::Compliant,
        };
    }
    report.namespaces = namespaces.into_values().collect();
    let findings = findings(mesh, &report);
    (report, findings)
}

fn source_list(sources: &BTreeMap<String, u64>) -> String {
    sources.iter().map(|(source, n)| format!("{source} ({n})")).collect::<Vec<_>>().join(", ")
}

fn findings(mesh: &MeshConfig, report: &MtlsReport) -> Vec<Finding> {
    let mut out = Vec::new();
    // Per destination: the plaintext sources of its violating or at-risk edges.
    let mut plaintext: BTreeMap<(&str, Classification), BTreeMap<String, u64>> = BTreeMap::new();
    for edge in &report.edges {
        if matches!(edge.classification, Classification::Violation | Classification::AtRisk) {
            plaintext
                .entry((edge.destination.as_str(), edge.classification))
                .or_default()
                .insert(edge.source.clone(), edge.counts.plaintext);
        }
    }
    for ((destination, classification), sources) in plaintext {
        let (resource, origin) = service_resource(mesh, destination);
        let total: u64 = sources.values().sum();
        let (code, message) = match classification {
            Classification::Violation => (
                &ML2001,
                format!(
                    "{destination} accepted {total} plaintext requests although PeerAuthentication requires STRICT \
                     mTLS there; they came from {}.",
                    source_list(&sources)
                ),
            ),
            _ => (
                &ML2002,
                format!(
                    "{destination} (PeerAuthentication PERMISSIVE) accepted {total} plaintext requests from {}.",
                    source_list(&sources)
                ),
            ),
        };
        out.push(finding(code, resource, origin, message));
    }
    for coverage in &report.namespaces {
        if coverage.classification == Classification::ReadyToTighten {
            // Namespaces are indexed under the namespace `default`, as their documents give none.
            let origin = mesh.get(Kind::Namespace, "default", &coverage.namespace).map(super::origin_of);
            let message = format!(
                "Namespace {} received {} requests in the window, all over mutual TLS, but its effective \
                 PeerAuthentication mode is PERMISSIVE.",
                coverage.namespace, coverage.counts.requests
            );
            out.push(finding(&ML2003, format!("Namespace {}", coverage.namespace), origin, message));
        }
    }
    out
}
