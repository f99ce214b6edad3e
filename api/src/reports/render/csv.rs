//! CSV: one row per observed edge and one per finding, in one table (`kind` says which), so a spreadsheet
//! or `csvkit` can filter either. Columns that do not apply to a row's kind are empty.

use super::super::model::Report;

/// The header row, documented in docs/reports.md.
pub const COLUMNS: [&str; 15] = [
    "kind",
    "namespace",
    "source",
    "destination",
    "requests",
    "mutual",
    "plaintext",
    "unknown",
    "mtls_percent",
    "configured_mode",
    "classification",
    "level",
    "code",
    "resource",
    "message",
];

pub fn render(report: &Report) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut rows: Vec<[String; 15]> = Vec::with_capacity(report.edges.len() + report.findings.len());
    for e in &report.edges {
        rows.push([
            "edge".to_owned(),
            e.destination_namespace.clone().unwrap_or_default(),
            e.source.clone(),
            e.destination.clone(),
            e.observed.requests.to_string(),
            e.observed.mutual.to_string(),
            e.observed.plaintext.to_string(),
            e.observed.unknown.to_string(),
            e.observed.percent.map(|p| format!("{p:.3}")).unwrap_or_default(),
            e.configured_mode.clone(),
            e.classification.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    for f in &report.findings {
        rows.push([
            "finding".to_owned(),
            f.namespace.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            f.level.as_str().to_owned(),
            f.code.clone(),
            f.resource.clone(),
            f.message.clone(),
        ]);
    }
    // Writing to a Vec cannot fail; the results are checked anyway so that a failure shows, not vanishes.
    let written = writer.write_record(COLUMNS).and_then(|()| rows.iter().try_for_each(|row| writer.write_record(row)));
    match written.map_err(|e| e.to_string()).and_then(|()| writer.into_inner().map_err(|e| e.to_string())) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("error\n{error}\n"),
    }
}
