//! Renderings of a stored [`Report`]: JSON (the stored document itself), a self-contained HTML page with
//! inline CSS and SVG charts, Markdown, and CSV. Each is a pure function of the report, so a report renders
//! the same whenever it is asked for.

mod csv;
mod html;
mod markdown;

use super::model::Report;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub use self::csv::COLUMNS as CSV_COLUMNS;

/// A rendering of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Html,
    Md,
    Csv,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Json, Format::Html, Format::Md, Format::Csv];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Html => "html",
            Format::Md => "md",
            Format::Csv => "csv",
        }
    }

    /// The `Content-Type` the API answers with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Html => "text/html; charset=utf-8",
            Format::Md => "text/markdown; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }

    /// File name extension.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            "md" | "markdown" => Ok(Format::Md),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown report format {s:?} (expected json, html, md or csv)")),
        }
    }
}

/// `report` rendered as `format`. `id` is the stored report's id, shown in the titles when known.
pub fn render(report: &Report, id: Option<i64>, format: Format) -> String {
    match format {
        Format::Json => {
            let mut json = serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            json.push('\n');
            json
        }
        Format::Html => html::render(report, id),
        Format::Md => markdown::render(report, id),
        Format::Csv => csv::render(report),
    }
}

/// `12.345%`, or `n/a` without known traffic.
fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{}%", trim_float(v, 3)))
}

/// A float with at most `decimals` decimals and no trailing zeros.
fn trim_float(value: f64, decimals: usize) -> String {
    let s = format!("{value:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// `+1.5`, `-2`, `0`, or `n/a`.
fn signed(delta: Option<f64>) -> String {
    match delta {
        None => "n/a".to_owned(),
        Some(d) if d > 0.0 => format!("+{}", trim_float(d, 3)),
        Some(d) => trim_float(d, 3),
    }
}

fn title(report: &Report, id: Option<i64>) -> String {
    let mut title = "meshlens compliance report".to_owned();
    if let Some(id) = id {
        title.push_str(&format!(" #{id}"));
    }
    if let Some(ns) = &report.namespace {
        title.push_str(&format!(" — namespace {ns}"));
    }
    title
}

fn verdict_text(report: &Report) -> &'static str {
    match &report.policy {
        None => "no policy",
        Some(v) if v.passed => "PASSED",
        Some(_) => "FAILED",
    }
}
