//! The [`Report`] document: what a compliance report says, as stored (JSON) and as every renderer reads
//! it. It is built from one [`Analysis`] and owns its data (no borrowed analyzer types), so a stored report
//! deserializes and renders the same way after the analyzer changes. The field names are a public contract
//! (docs/reports.md); adding fields is compatible, renaming is not.

use crate::analysis::Analysis;
use chrono::{DateTime, SubsecRound, Utc};
use meshlens_analyzer::{Finding, Level};
use meshlens_model::mesh::{Kind, MeshConfig};
use meshlens_model::names::service_fqdn_parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Version of the [`Report`] JSON layout.
pub const FORMAT_VERSION: u32 = 1;

/// One compliance report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format_version: u32,
    pub generated_at: DateTime<Utc>,
    /// The analyzed window: `start` inclusive, `end` exclusive.
    pub window: ReportWindow,
    /// Set when this is one namespace's slice of a mesh-wide report (what a namespace-scoped caller gets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The configuration in force when the report was made.
    pub config: ConfigSummary,
    pub summary: Summary,
    pub mtls: MtlsSection,
    /// Every observed edge (client workload → destination service) with its mTLS counts.
    pub edges: Vec<EdgeRow>,
    /// The edges that carried plaintext, with the identities at both ends.
    pub plaintext_edges: Vec<PlaintextEdge>,
    /// Static configuration findings and traffic findings, most severe first.
    pub findings: Vec<ReportFinding>,
    /// Services with resilience gaps (missing timeouts, retries, outlier detection or limits).
    pub resilience_gaps: Vec<ResilienceGap>,
    pub retry_amplification: Vec<Amplification>,
    pub recommendations: Vec<RecommendationRow>,
    /// The change since the previous stored report; absent for the first one.
    #[serde(default)]
    pub trend: Option<super::trend::Trend>,
    /// The verdict of the policy the report was checked against; absent without a policy.
    #[serde(default)]
    pub policy: Option<super::policy::Verdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Which configuration a report was read against. Config versions do not exist yet, so the identity is a
/// content hash: sha256 over the canonical JSON of every loaded resource, sorted by kind, namespace and
/// name (file names and comments do not change it; any field value does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    /// `sha256:<hex>`.
    pub hash: String,
    /// Loaded resources by kind.
    pub resources: BTreeMap<String, usize>,
    /// Documents that failed to load (not part of the hash).
    pub load_errors: usize,
}

/// Observed mTLS of a set of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub requests: u64,
    pub mutual: u64,
    pub plaintext: u64,
    /// Requests whose mTLS no record could tell (a client-side text log line without its server's).
    pub unknown: u64,
    /// `mutual / (mutual + plaintext)` in percent; `None` when no request's mTLS is known.
    pub percent: Option<f64>,
}

impl Coverage {
    pub fn new(mutual: u64, plaintext: u64, unknown: u64) -> Self {
        let known = mutual + plaintext;
        let percent = (known > 0).then(|| mutual as f64 * 100.0 / known as f64);
        Coverage { requests: mutual + plaintext + unknown, mutual, plaintext, unknown, percent }
    }

    fn add(&self, other: &Coverage) -> Coverage {
        Coverage::new(self.mutual + other.mutual, self.plaintext + other.plaintext, self.unknown + other.unknown)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MtlsSection {
    pub overall: Coverage,
    /// Per destination namespace: observed next to configured.
    pub namespaces: Vec<NamespaceMtls>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceMtls {
    pub namespace: String,
    pub observed: Coverage,
    /// Effective PeerAuthentication modes of the edges into the namespace (`STRICT`, `PERMISSIVE`, ...).
    pub configured_modes: Vec<String>,
    /// `violation`, `at_risk`, `ready_to_tighten` or `compliant` (see docs/findings.md, ML2001-ML2003).
    pub classification: String,
    /// Plaintext sources into the namespace with their request counts.
    pub plaintext_sources: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    /// `namespace/workload` of the client, or `unknown[@IP]`.
    pub source: String,
    /// Destination service FQDN (or `namespace/workload`).
    pub destination: String,
    pub source_namespace: Option<String>,
    pub destination_namespace: Option<String>,
    pub observed: Coverage,
    /// Effective PeerAuthentication mode at the destination.
    pub configured_mode: String,
    /// The client's DestinationRule TLS mode, when one sets it.
    pub client_tls: Option<String>,
    pub classification: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaintextEdge {
    pub source: String,
    pub destination: String,
    pub destination_namespace: Option<String>,
    pub plaintext_requests: u64,
    pub requests: u64,
    pub configured_mode: String,
    pub classification: String,
    /// SPIFFE identity the client's service account would present with mTLS, from the configuration.
    pub source_principal: Option<String>,
    /// SPIFFE identities of the workloads behind the destination service, from the configuration.
    pub destination_principals: Vec<String>,
}

/// Where a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingSource {
    /// The static checks of the configuration (IST, ML1xxx).
    Config,
    /// The traffic analyses of the window (ML2xxx).
    Traffic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFinding {
    pub source: FindingSource,
    pub code: String,
    pub level: Level,
    pub resource: String,
    /// The namespace of the resource, when it has one.
    pub namespace: Option<String>,
    pub message: String,
    pub origin: Option<String>,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResilienceGap {
    pub service: String,
    pub namespace: Option<String>,
    pub requests: u64,
    /// What is missing, in words (`no timeout on 2 of 3 routes`, ...).
    pub gaps: Vec<String>,
    pub routes: usize,
    pub routes_with_timeout: usize,
    pub routes_with_retries: usize,
    pub outlier_detection: bool,
    pub connection_limits: bool,
    pub server_errors: u64,
    pub timeouts: u64,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amplification {
    pub chain: Vec<String>,
    pub worst_case_tries: u64,
    pub observed_max_tries: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationRow {
    /// `timeout`, `retries` or `outlier_detection`.
    pub kind: String,
    pub target: String,
    pub service: String,
    pub namespace: Option<String>,
    pub value: serde_json::Value,
    pub formula: String,
    pub confidence: String,
    pub resource: String,
    /// Ready-to-apply YAML.
    pub patch: String,
}

/// Findings per level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCounts {
    pub error: u64,
    pub warning: u64,
    pub info: u64,
}

impl LevelCounts {
    pub fn of<'a>(levels: impl IntoIterator<Item = &'a Level>) -> Self {
        let mut counts = LevelCounts::default();
        for level in levels {
            *counts.get_mut(*level) += 1;
        }
        counts
    }

    pub fn get(&self, level: Level) -> u64 {
        match level {
            Level::Error => self.error,
            Level::Warning => self.warning,
            Level::Info => self.info,
        }
    }

    fn get_mut(&mut self, level: Level) -> &mut u64 {
        match level {
            Level::Error => &mut self.error,
            Level::Warning => &mut self.warning,
            Level::Info => &mut self.info,
        }
    }
}

/// The headline figures, derived from the rest of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mtls: Coverage,
    pub findings: LevelCounts,
    pub plaintext_edges: usize,
    pub resilience_gaps: usize,
    pub recommendations: usize,
}

impl Report {
    /// The report of `analysis` (no trend, no verdict yet).
    pub fn build(analysis: &Analysis, generated_at: DateTime<Utc>) -> Report {
        let mesh = &analysis.mesh.mesh;
        let traffic = &analysis.traffic;
        let trust_domain = &analysis.mesh.settings.trust_domain;
        let config = ConfigSummary {
            hash: config_hash(mesh),
            resources: analysis.mesh.report.counts_by_kind().into_iter().map(|(k, n)| (k.to_string(), n)).collect(),
            load_errors: analysis.mesh.report.errors.len(),
        };
        let count = |c: &meshlens_analyzer::traffic::mtls::Counts| Coverage::new(c.mutual, c.plaintext, c.unknown);
        let mtls = MtlsSection {
            overall: count(&traffic.mtls.overall),
            namespaces: traffic
                .mtls
                .namespaces
                .iter()
                .map(|n| NamespaceMtls {
                    namespace: n.namespace.clone(),
                    observed: count(&n.counts),
                    configured_modes: n.modes.iter().map(|m| (*m).to_owned()).collect(),
                    classification: enum_name(&n.classification),
                    plaintext_sources: n.plaintext_sources.clone(),
                })
                .collect(),
        };
        let edges: Vec<EdgeRow> = traffic
            .mtls
            .edges
            .iter()
            .map(|e| EdgeRow {
                source: e.source.clone(),
                destination: e.destination.clone(),
                source_namespace: e.source.split_once('/').map(|(ns, _)| ns.to_owned()),
                destination_namespace: e.destination_namespace.clone(),
                observed: count(&e.counts),
                configured_mode: e.configured.peer_authentication.to_owned(),
                client_tls: e.configured.client_tls.map(str::to_owned),
                classification: enum_name(&e.classification),
            })
            .collect();
        let plaintext_edges = edges
            .iter()
            .filter(|e| e.observed.plaintext > 0)
            .map(|e| PlaintextEdge {
                source: e.source.clone(),
                destination: e.destination.clone(),
                destination_namespace: e.destination_namespace.clone(),
                plaintext_requests: e.observed.plaintext,
                requests: e.observed.requests,
                configured_mode: e.configured_mode.clone(),
                classification: e.classification.clone(),
                source_principal: source_principal(mesh, trust_domain, &e.source),
                destination_principals: destination_principals(mesh, trust_domain, &e.destination),
            })
            .collect();
        let mut findings: Vec<ReportFinding> = analysis
            .mesh
            .config_findings
            .iter()
            .map(|f| report_finding(FindingSource::Config, f))
            .chain(traffic.findings.iter().map(|f| report_finding(FindingSource::Traffic, f)))
            .collect();
        findings.sort_by(|a, b| {
            (std::cmp::Reverse(a.level), &a.resource, &a.code, &a.message).cmp(&(
                std::cmp::Reverse(b.level),
                &b.resource,
                &b.code,
                &b.message,
            ))
        });
        let resilience_gaps = traffic
            .resilience
            .services
            .iter()
            .filter(|s| !s.gaps.is_empty())
            .map(|s| ResilienceGap {
                service: s.service.clone(),
                namespace: service_namespace(&s.service),
                requests: s.requests,
                gaps: s.gaps.clone(),
                routes: s.configured.routes,
                routes_with_timeout: s.configured.routes_with_timeout,
                routes_with_retries: s.configured.routes_with_retries,
                outlier_detection: s.configured.outlier_detection,
                connection_limits: s.configured.connection_limits,
                server_errors: s.failures.server_errors,
                timeouts: s.failures.timeouts,
                p99_ms: s.latency.map(|l| l.p99_ms),
            })
            .collect();
        let retry_amplification = traffic
            .resilience
            .amplification
            .iter()
            .map(|a| Amplification {
                chain: a.chain.clone(),
                worst_case_tries: a.worst_case_tries,
                observed_max_tries: a.observed_max_tries,
            })
            .collect();
        let recommendations = traffic
            .recommendations
            .iter()
            .map(|r| RecommendationRow {
                kind: enum_name(&r.kind),
                target: r.target.clone(),
                service: r.service.clone(),
                namespace: service_namespace(&r.service),
                value: r.value.clone(),
                formula: r.formula.clone(),
                confidence: enum_name(&r.confidence),
                resource: r.resource.clone(),
                patch: r.patch.clone(),
            })
            .collect();
        // Microseconds, the resolution the history stores, so a report reads back equal to what was built.
        let micros = |t: DateTime<Utc>| t.trunc_subsecs(6);
        let mut report = Report {
            format_version: FORMAT_VERSION,
            generated_at: micros(generated_at),
            window: ReportWindow { start: micros(traffic.window.start), end: micros(traffic.window.end) },
            namespace: None,
            config,
            summary: Summary {
                mtls: Coverage::default(),
                findings: LevelCounts::default(),
                plaintext_edges: 0,
                resilience_gaps: 0,
                recommendations: 0,
            },
            mtls,
            edges,
            plaintext_edges,
            findings,
            resilience_gaps,
            retry_amplification,
            recommendations,
            trend: None,
            policy: None,
        };
        report.summarize();
        report
    }

    /// Recomputes [`Report::summary`] from the sections.
    pub fn summarize(&mut self) {
        self.summary = Summary {
            mtls: self.mtls.overall,
            findings: LevelCounts::of(self.findings.iter().map(|f| &f.level)),
            plaintext_edges: self.plaintext_edges.len(),
            resilience_gaps: self.resilience_gaps.len(),
            recommendations: self.recommendations.len(),
        };
    }

    /// What a caller scoped to `namespace` may see: edges from or into it, its namespace's mTLS (which
    /// becomes the overall figure), findings, gaps and recommendations about its resources. Mesh-wide
    /// facts are left out: the policy verdict (it judges every namespace), the resource counts and the
    /// trend (the caller recomputes it against the previous report's slice).
    pub fn slice(&self, namespace: &str) -> Report {
        let ns = Some(namespace);
        let edges: Vec<EdgeRow> = self
            .edges
            .iter()
            .filter(|e| e.source_namespace.as_deref() == ns || e.destination_namespace.as_deref() == ns)
            .cloned()
            .collect();
        let overall = edges.iter().fold(Coverage::default(), |sum, e| sum.add(&e.observed));
        let mut slice = Report {
            format_version: self.format_version,
            generated_at: self.generated_at,
            window: self.window,
            namespace: Some(namespace.to_owned()),
            config: ConfigSummary { hash: self.config.hash.clone(), resources: BTreeMap::new(), load_errors: 0 },
            summary: self.summary.clone(),
            mtls: MtlsSection {
                overall,
                namespaces: self.mtls.namespaces.iter().filter(|n| n.namespace == namespace).cloned().collect(),
            },
            plaintext_edges: self
                .plaintext_edges
                .iter()
                .filter(|e| e.destination_namespace.as_deref() == ns || e.source.split_once('/').map(|(s, _)| s) == ns)
                .cloned()
                .collect(),
            edges,
            findings: self.findings.iter().filter(|f| f.namespace.as_deref() == ns).cloned().collect(),
            resilience_gaps: self.resilience_gaps.iter().filter(|g| g.namespace.as_deref() == ns).cloned().collect(),
            retry_amplification: self
                .retry_amplification
                .iter()
                .filter(|a| a.chain.iter().any(|hop| hop_namespace(hop) == ns))
                .cloned()
                .collect(),
            recommendations: self.recommendations.iter().filter(|r| r.namespace.as_deref() == ns).cloned().collect(),
            trend: None,
            policy: None,
        };
        slice.summarize();
        slice
    }
}

/// The serde name of a unit enum variant (`at_risk`, `outlier_detection`, `high`).
fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}

fn report_finding(source: FindingSource, f: &Finding) -> ReportFinding {
    ReportFinding {
        source,
        code: f.code.clone(),
        level: f.level,
        namespace: resource_namespace(&f.resource),
        resource: f.resource.clone(),
        message: f.message.clone(),
        origin: f.origin.clone(),
        fix: f.fix.clone(),
    }
}

/// The namespace in a finding's resource: `Kind namespace/name`, or a `Service`/`Host` named by FQDN.
pub fn resource_namespace(resource: &str) -> Option<String> {
    let (_kind, name) = resource.split_once(' ')?;
    let name = name.split_whitespace().next()?;
    match name.split_once('/') {
        Some((namespace, _)) if !namespace.is_empty() => Some(namespace.to_owned()),
        _ => service_namespace(name),
    }
}

/// The namespace of a service FQDN (`reviews.bookinfo.svc.cluster.local`), or of `namespace/workload`.
fn service_namespace(service: &str) -> Option<String> {
    service_fqdn_parts(service).map(|(_, namespace)| namespace.to_owned())
}

/// The namespace of a hop of a call chain: `namespace/workload` or a service FQDN.
fn hop_namespace(hop: &str) -> Option<&str> {
    match hop.split_once('/') {
        Some((namespace, _)) => Some(namespace),
        None => service_fqdn_parts(hop).map(|(_, namespace)| namespace),
    }
}

fn spiffe(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The identity of the `namespace/workload` a client edge names, by its service account.
fn source_principal(mesh: &MeshConfig, trust_domain: &str, source: &str) -> Option<String> {
    let (namespace, name) = source.split_once('/')?;
    let workloads = mesh.workloads();
    let workload = workloads.iter().filter(|w| w.namespace == namespace).find(|w| {
        w.name == name || (w.kind == Kind::Pod && w.name.strip_prefix(name).is_some_and(|rest| rest.starts_with('-')))
    })?;
    Some(spiffe(trust_domain, namespace, &workload.service_account))
}

/// The identities of the workloads a destination service selects.
fn destination_principals(mesh: &MeshConfig, trust_domain: &str, destination: &str) -> Vec<String> {
    let Some(service) = mesh.service_by_host(destination) else { return Vec::new() };
    let Some(selector) = service.spec.selector.as_ref().filter(|s| !s.is_empty()) else { return Vec::new() };
    let namespace = service.metadata.ns();
    let mut principals: Vec<String> = mesh
        .workloads()
        .iter()
        .filter(|w| w.namespace == namespace && meshlens_model::mesh::meta::labels_match(selector, &w.labels))
        .map(|w| spiffe(trust_domain, &w.namespace, &w.service_account))
        .collect();
    principals.sort();
    principals.dedup();
    principals
}

/// sha256 over the canonical JSON of the resources, in a stable order.
pub fn config_hash(mesh: &MeshConfig) -> String {
    let mut keyed: Vec<(String, String)> = mesh
        .resources()
        .iter()
        .map(|loaded| {
            let json = serde_json::to_string(&loaded.resource).unwrap_or_default();
            (loaded.resource.reference(), json)
        })
        .collect();
    keyed.sort();
    let mut hasher = Sha256::new();
    for (key, json) in &keyed {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(json.as_bytes());
        hasher.update([0]);
    }
    format!("sha256:{:x}", hasher.finalize())
}
