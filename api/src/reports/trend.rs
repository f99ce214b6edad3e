//! The [`Trend`] of a report against the previous stored one: how the mTLS share and the findings moved,
//! and which findings are new or resolved. A finding is the same across reports when its code and
//! resource are: its message carries counts that change from one window to the next.

use super::model::{LevelCounts, Report};
use chrono::{DateTime, Utc};
use meshlens_analyzer::Level;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// The stored report compared with.
    pub previous_id: i64,
    pub previous_generated_at: DateTime<Utc>,
    /// Overall mTLS percent then and now; `delta` in percentage points.
    pub mtls_percent: Change<f64>,
    pub plaintext_requests: Change<i64>,
    pub findings_error: Change<i64>,
    pub findings_warning: Change<i64>,
    pub findings_info: Change<i64>,
    /// Findings (by code and resource) present now and not then.
    pub new_findings: Vec<FindingKey>,
    /// Findings present then and not now.
    pub resolved_findings: Vec<FindingKey>,
    /// Whether the configuration changed in between (its hash differs).
    pub config_changed: bool,
}

/// A figure in the previous and the current report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change<T> {
    pub previous: Option<T>,
    pub current: Option<T>,
    /// `current - previous`, when both exist.
    pub delta: Option<T>,
}

impl<T: Copy + std::ops::Sub<Output = T>> Change<T> {
    fn of(previous: Option<T>, current: Option<T>) -> Self {
        let delta = previous.zip(current).map(|(p, c)| c - p);
        Change { previous, current, delta }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FindingKey {
    pub code: String,
    pub resource: String,
    pub level: Level,
}

impl Trend {
    /// How `current` differs from `previous` (stored as `previous_id`).
    pub fn between(previous_id: i64, previous: &Report, current: &Report) -> Trend {
        let keys = |r: &Report| -> BTreeSet<FindingKey> {
            r.findings
                .iter()
                .map(|f| FindingKey { code: f.code.clone(), resource: f.resource.clone(), level: f.level })
                .collect()
        };
        let (before, now) = (keys(previous), keys(current));
        let same = |a: &FindingKey, b: &FindingKey| a.code == b.code && a.resource == b.resource;
        let new_findings = now.iter().filter(|k| !before.iter().any(|p| same(p, k))).cloned().collect();
        let resolved_findings = before.iter().filter(|k| !now.iter().any(|c| same(c, k))).cloned().collect();
        let level = |counts: &LevelCounts, level: Level| Some(counts.get(level) as i64);
        let (p, c) = (&previous.summary, &current.summary);
        Trend {
            previous_id,
            previous_generated_at: previous.generated_at,
            mtls_percent: Change::of(p.mtls.percent, c.mtls.percent),
            plaintext_requests: Change::of(Some(p.mtls.plaintext as i64), Some(c.mtls.plaintext as i64)),
            findings_error: Change::of(level(&p.findings, Level::Error), level(&c.findings, Level::Error)),
            findings_warning: Change::of(level(&p.findings, Level::Warning), level(&c.findings, Level::Warning)),
            findings_info: Change::of(level(&p.findings, Level::Info), level(&c.findings, Level::Info)),
            new_findings,
            resolved_findings,
            config_changed: previous.config.hash != current.config.hash,
        }
    }
}
