//! The demo's result: the analyses of the run (the static checks of the demo mesh, and the traffic
//! analyses of the store over the run's window, exactly as `meshlens analyze-config` and `meshlens analyze`
//! compute them), set against what the demo planted and what the traffic generator sent. Printed for the
//! terminal and written as JSON (`summary.json`, `--summary-json`) for scripts and the end-to-end test.

use super::shipper::Shipped;
use super::traffic::{Kind, TrafficCounts};
use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use meshlens_analyzer::config::ConfigAnalyzer;
use meshlens_analyzer::traffic::{self, TrafficOptions, TrafficReport, Window};
use meshlens_analyzer::{Finding, Level};
use meshlens_model::mesh::{LoadReport, MeshConfig, MeshSettings};
use meshlens_store::{Store, StoreConfig};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A problem planted in `demo/mesh.yaml` (or in the apps' behaviour), and the findings that report it.
#[derive(Debug, Clone, Copy)]
struct Planted {
    id: &'static str,
    what: &'static str,
    /// Each finding that must be reported: (code, resource).
    expected: &'static [(&'static str, &'static str)],
}

/// What the demo plants; docs/quickstart.md walks through each.
const PLANTED: &[Planted] = &[
    Planted {
        id: "permissive-plaintext",
        what: "namespace bookinfo is PERMISSIVE and legacy/report-job calls details in plaintext",
        expected: &[("ML1007", "PeerAuthentication bookinfo/default"), ("ML2002", "Service bookinfo/details")],
    },
    Planted {
        id: "route-without-timeout",
        what: "the route to details has no timeout",
        expected: &[("ML1001", "VirtualService bookinfo/details")],
    },
    Planted {
        id: "flaky-ratings",
        what: "ratings fails 20% of its requests; retries on the read route hide it from reviews",
        expected: &[("ML1004", "DestinationRule bookinfo/ratings")],
    },
    Planted {
        id: "retry-on-post",
        what: "the POST route to ratings retries on 5xx, so a rating may be stored twice",
        expected: &[("ML1002", "VirtualService bookinfo/ratings"), ("ML2012", "Service bookinfo/ratings")],
    },
    Planted {
        id: "unused-route",
        what: "the gateway route for /api/v0 receives no traffic",
        expected: &[("ML2004", "VirtualService bookinfo/bookinfo")],
    },
];

/// Analyzes the run: the store (read-only, next to the running collector) over `started..ended`.
pub async fn analyze(
    config: &LoadReport,
    store_dir: &Path,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> anyhow::Result<(Vec<Finding>, TrafficReport)> {
    let settings = MeshSettings::default();
    let config_findings = ConfigAnalyzer::new(settings.clone()).analyze(config);
    let mesh = MeshConfig::new(config.resources.clone()).with_root_namespace(&settings.root_namespace);
    let store = Store::open_read_only(StoreConfig::new(store_dir))
        .await
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    // The end is exclusive; a little past it covers the last records.
    let window = Window { start: started, end: ended + TimeDelta::seconds(1) };
    let report = traffic::analyze(&store.session_context(), &mesh, window, &TrafficOptions::default())
        .await
        .context("analyzing the run's traffic")?;
    Ok((config_findings, report))
}

/// The run as the demo saw it.
pub struct Run {
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub api: String,
    pub ingress: String,
    pub data_dir: PathBuf,
    pub rate: f64,
    pub seed: u64,
    pub ratings_fail_rate: f64,
    pub traffic: TrafficCounts,
    pub shipped: Shipped,
    pub clean_shutdown: bool,
    pub report: (Vec<Finding>, TrafficReport),
    pub api_view: Option<ApiView>,
    pub compliance: Option<ComplianceReport>,
}

/// The compliance report of the run, made and stored through `POST /api/v1/reports`.
#[derive(Debug, Serialize)]
pub struct ComplianceReport {
    /// Its id in the report history (`GET /api/v1/reports/{id}`).
    pub id: i64,
    /// The verdict of the demo's policy (mTLS >= 99.9%, no Error findings, no plaintext into bookinfo).
    pub passed: Option<bool>,
    /// `GET /api/v1/reports/{id}?format=html`, saved.
    pub html: PathBuf,
    /// `GET /api/v1/reports/{id}?format=json`, saved.
    pub json: PathBuf,
    /// Whether `GET /api/v1/reports` listed it.
    pub listed: bool,
}

/// What the REST API answered about the run.
#[derive(Debug, Serialize)]
pub struct ApiView {
    /// `GET /api/v1/findings` over the run's window.
    pub findings: serde_json::Value,
    /// `GET /api/v1/mtls/coverage` over the run's window.
    pub mtls_coverage: serde_json::Value,
}

impl ApiView {
    fn reports(&self, code: &str, resource: &str) -> bool {
        let items = self.findings.get("items").and_then(serde_json::Value::as_array);
        items.is_some_and(|items| items.iter().any(|f| f["code"] == code && f["resource"] == resource))
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub api: String,
    pub ingress: String,
    pub data_dir: PathBuf,
    pub rate: f64,
    pub seed: u64,
    pub ratings_fail_rate: f64,
    /// What the traffic generator sent and got back.
    pub traffic: TrafficCounts,
    /// Access-log lines shipped to the collector.
    pub shipped: Shipped,
    /// Whether every child process stopped on SIGTERM and exited with status 0.
    pub clean_shutdown: bool,
    pub planted: Vec<PlantedStatus>,
    /// Findings by level.
    pub levels: LevelCounts,
    /// Static (ML1xxx, IST) and traffic (ML2xxx) findings, each marked with the planted problem it reports.
    pub findings: Vec<MarkedFinding>,
    /// The traffic analyses: `mtls`, `routes`, `resilience`, `recommendations` (and their findings).
    pub analysis: TrafficReport,
    /// The same run through the REST API, when this build's API serves it.
    pub api_view: Option<ApiView>,
    /// The run's compliance report, stored in the report history and saved as HTML and JSON.
    pub compliance: Option<ComplianceReport>,
}

#[derive(Debug, Serialize)]
pub struct PlantedStatus {
    pub id: &'static str,
    pub what: &'static str,
    /// `CODE RESOURCE` of each expected finding, and whether it was reported.
    pub expected: Vec<(String, bool)>,
    pub found: bool,
    /// Whether `GET /api/v1/findings` reports every expected finding too (absent without the API).
    pub in_api: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct LevelCounts {
    pub error: usize,
    pub warning: usize,
    pub info: usize,
}

#[derive(Debug, Serialize)]
pub struct MarkedFinding {
    #[serde(flatten)]
    pub finding: Finding,
    /// The planted problem this finding reports, if any.
    pub planted: Option<&'static str>,
}

impl Summary {
    pub fn new(run: Run) -> Summary {
        let (config_findings, analysis) = run.report;
        let findings: Vec<MarkedFinding> = config_findings
            .into_iter()
            .chain(analysis.findings.iter().cloned())
            .map(|finding| {
                let planted = PLANTED
                    .iter()
                    .find(|p| {
                        p.expected.iter().any(|(code, resource)| finding.code == *code && finding.resource == *resource)
                    })
                    .map(|p| p.id);
                MarkedFinding { finding, planted }
            })
            .collect();
        let planted = PLANTED
            .iter()
            .map(|p| {
                let expected: Vec<(String, bool)> = p
                    .expected
                    .iter()
                    .map(|(code, resource)| {
                        let seen = findings.iter().any(|f| f.finding.code == *code && f.finding.resource == *resource);
                        (format!("{code} {resource}"), seen)
                    })
                    .collect();
                let in_api = run.api_view.as_ref().map(|api| p.expected.iter().all(|(c, r)| api.reports(c, r)));
                PlantedStatus {
                    id: p.id,
                    what: p.what,
                    found: expected.iter().all(|(_, seen)| *seen),
                    expected,
                    in_api,
                }
            })
            .collect();
        let mut levels = LevelCounts::default();
        for f in &findings {
            match f.finding.level {
                Level::Error => levels.error += 1,
                Level::Warning => levels.warning += 1,
                Level::Info => levels.info += 1,
            }
        }
        Summary {
            started: run.started,
            ended: run.ended,
            api: run.api,
            ingress: run.ingress,
            data_dir: run.data_dir,
            rate: run.rate,
            seed: run.seed,
            ratings_fail_rate: run.ratings_fail_rate,
            traffic: run.traffic,
            shipped: run.shipped,
            clean_shutdown: run.clean_shutdown,
            planted,
            levels,
            findings,
            analysis,
            api_view: run.api_view,
            compliance: run.compliance,
        }
    }

    pub fn all_planted_found(&self) -> bool {
        self.planted.iter().all(|p| p.found)
    }

    /// Findings of level Error that no planted problem explains.
    pub fn unplanted_errors(&self) -> usize {
        self.findings.iter().filter(|f| f.finding.level == Level::Error && f.planted.is_none()).count()
    }

    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let seconds = (self.ended - self.started).num_milliseconds() as f64 / 1000.0;
        let t = &self.traffic;
        writeln!(out, "\n=== meshlens demo: {seconds:.0}s, {} requests sent ===\n", t.sent())?;
        let kinds = t
            .by_kind
            .iter()
            .map(|(kind, c)| format!("{} {} ({} answered)", kind_name(*kind), c.sent, c.answered))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(out, "Traffic: {kinds}")?;
        writeln!(
            out,
            "Telemetry: {} access-log records shipped to the collector, {} stored, {} rejected\n",
            self.shipped.lines, self.shipped.stored, self.shipped.rejected
        )?;

        let overall = &self.analysis.mtls.overall;
        writeln!(
            out,
            "mTLS coverage: {} requests seen by sidecars: {} mutual ({}), {} plaintext ({}), {} unknown",
            overall.requests,
            overall.mutual,
            percent(overall.mutual, overall.requests),
            overall.plaintext,
            percent(overall.plaintext, overall.requests),
            overall.unknown
        )?;
        writeln!(out, "  the traffic generator sent {} plaintext requests that were answered", t.plaintext_answered)?;
        for ns in &self.analysis.mtls.namespaces {
            let modes: Vec<&str> = ns.modes.iter().copied().collect();
            let sources: Vec<String> = ns.plaintext_sources.iter().map(|(s, n)| format!("{s} ({n})")).collect();
            writeln!(
                out,
                "  {:<14} {:<11} {:>6} requests, {} mutual{}",
                ns.namespace,
                modes.join(","),
                ns.counts.requests,
                percent(ns.counts.mutual, ns.counts.requests),
                if sources.is_empty() { String::new() } else { format!(", plaintext from {}", sources.join(", ")) }
            )?;
        }

        if let Some(split) = self.analysis.routes.routes.iter().find_map(|r| r.split.as_ref().map(|s| (r, s))) {
            let (route, split) = split;
            let parts: Vec<String> = split
                .destinations
                .iter()
                .map(|d| {
                    format!(
                        "{} {}% (configured {}%)",
                        d.subset.as_deref().unwrap_or(&d.host),
                        round1(d.observed_percent),
                        d.weight
                    )
                })
                .collect();
            writeln!(out, "\nTraffic split of {}: {}", route.route, parts.join(", "))?;
        }
        self.print_retries(out)?;

        writeln!(out, "\nPlanted problems:")?;
        for p in &self.planted {
            writeln!(out, "  [{}] {}", if p.found { "found" } else { "MISSED" }, p.what)?;
            for (finding, seen) in &p.expected {
                writeln!(out, "          {} {finding}", if *seen { "+" } else { "-" })?;
            }
        }

        if let Some(api) = &self.api_view {
            let agreed = self.planted.iter().filter(|p| p.in_api == Some(true)).count();
            let total = api.findings.get("total").and_then(serde_json::Value::as_u64).unwrap_or(0);
            writeln!(
                out,
                "  the REST API (GET /api/v1/findings) reports {total} findings for the run, {agreed} of {} planted problems",
                self.planted.len()
            )?;
        }

        let l = &self.levels;
        writeln!(out, "\nFindings: {} errors, {} warnings, {} info", l.error, l.warning, l.info)?;
        let mut sorted: Vec<&MarkedFinding> = self.findings.iter().collect();
        sorted.sort_by(|a, b| b.finding.level.cmp(&a.finding.level).then(a.finding.code.cmp(&b.finding.code)));
        for f in sorted {
            writeln!(
                out,
                "  {:<7} {:<7} {}{}",
                f.finding.level.as_str(),
                f.finding.code,
                f.finding.message,
                if f.planted.is_some() { "  [planted]" } else { "" }
            )?;
        }

        if !self.analysis.recommendations.is_empty() {
            writeln!(out, "\nTop recommendations:")?;
            for r in self.analysis.recommendations.iter().take(5) {
                writeln!(out, "  {}: {}", r.target, r.value)?;
                writeln!(out, "      {}", r.formula)?;
            }
        }
        if let Some(report) = &self.compliance {
            let verdict = match report.passed {
                Some(true) => "passes",
                Some(false) => "fails",
                None => "has no verdict on",
            };
            writeln!(
                out,
                "\nCompliance report #{} {verdict} the demo's policy (mTLS >= 99.9%, no Error findings, no plaintext into bookinfo): {}",
                report.id,
                report.html.display()
            )?;
        }
        writeln!(out, "\nThe JSON of this summary is in {}/summary.json.", self.data_dir.display())?;
        writeln!(
            out,
            "Explore the stored records: meshlens query --data-dir {}/store 'SELECT ...'",
            self.data_dir.display()
        )?;
        Ok(())
    }

    /// Retries at work on ratings: how many tries failed at ratings, and how many requests failed for
    /// its callers.
    fn print_retries(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Some(ratings) = self.analysis.resilience.services.iter().find(|s| s.service.starts_with("ratings.")) else {
            return Ok(());
        };
        writeln!(
            out,
            "\nRetries at work on {}: {} requests, {} retried, {} failed for their callers ({} server errors, {} retries exhausted)",
            ratings.service,
            ratings.requests,
            percent(ratings.retries.retried, ratings.retries.requests),
            ratings.failures.server_errors + ratings.failures.retries_exhausted,
            ratings.failures.server_errors,
            ratings.failures.retries_exhausted,
        )?;
        if let Some(rate) = self.traffic.by_kind.get(&Kind::Rate) {
            let ok = rate.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum::<u64>();
            writeln!(out, "  ratings posted through the ingress: {} of {} succeeded", ok, rate.sent)?;
        }
        Ok(())
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Page => "product pages",
        Kind::Product => "API reads",
        Kind::Rate => "ratings posted",
        Kind::LegacyPlaintext => "plaintext calls by legacy/report-job",
    }
}

fn percent(part: u64, total: u64) -> String {
    if total == 0 { "-".to_owned() } else { format!("{:.1}%", part as f64 * 100.0 / total as f64) }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
