//! Compliance reports: the analyses over a window ([`crate::analysis::run`]) turned into one [`Report`]
//! document — overall and per-namespace mTLS observed vs configured, plaintext edges with the principals
//! at both ends, config and traffic findings, resilience gaps, recommendations — with the [`Trend`]
//! against the previous stored report and the [`Verdict`] of a [`Policy`]. Reports are stored with their
//! history in the SQL catalog ([`history`]) as JSON, and every rendering ([`render`]: JSON, HTML,
//! Markdown, CSV) is produced from that stored JSON.
//!
//! `meshlens report` (offline), `POST/GET /api/v1/reports` ([`routes`]) and the schedules
//! (`crate::schedules`) all make reports through [`generate`]. docs/reports.md documents the format.

pub mod api;
pub mod history;
pub mod model;
pub mod policy;
pub mod render;
pub mod trend;

pub use api::{json_body, parse_window, routes};
pub use model::Report;
pub use policy::{Policy, PolicyError, Verdict};
pub use render::{Format, render};
pub use trend::Trend;

use crate::error::ApiError;
use crate::state::AppState;
use meshlens_analyzer::traffic::Window;
use meshlens_store::Catalog;

/// Makes the report of `window` against the configuration in force: with the trend against the latest
/// report stored in `history` (the latest of `schedule_id`'s when a schedule asks), and the verdict of
/// `policy`. Nothing is stored; see [`history::insert`].
pub async fn generate(
    state: &AppState,
    history: Option<&Catalog>,
    window: Window,
    policy: Option<&Policy>,
    schedule_id: Option<i64>,
) -> Result<Report, ApiError> {
    let analysis = crate::analysis::run(state, window).await?;
    let mut report = Report::build(&analysis, chrono::Utc::now());
    if let Some(catalog) = history
        && let Some(previous) = history::latest(catalog, schedule_id).await?
    {
        report.trend = Some(Trend::between(previous.meta.id, &previous.report, &report));
    }
    report.policy = policy.map(|p| p.evaluate(&report));
    Ok(report)
}
