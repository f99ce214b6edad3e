//! Markdown: the report as headings and pipe tables, for pull requests, wikis and chat.

use super::super::model::Report;
use super::{percent, signed, title, trim_float, verdict_text};
use std::fmt::Write;

/// A table cell: pipes escaped, line breaks flattened.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let _ = writeln!(out, "|{}", headers.iter().map(|_| "---|").collect::<String>());
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

pub fn render(report: &Report, id: Option<i64>) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let _ = writeln!(out, "# {}\n", title(report, id));
    let _ = writeln!(out, "- Window: {} — {}", report.window.start.to_rfc3339(), report.window.end.to_rfc3339());
    let _ = writeln!(out, "- Generated: {}", report.generated_at.to_rfc3339());
    let _ = writeln!(out, "- Configuration: `{}`", report.config.hash);
    let _ = writeln!(out, "- Verdict: **{}**", verdict_text(report));
    let _ = writeln!(
        out,
        "- mTLS: **{}** ({} mutual, {} plaintext, {} unknown of {} requests)",
        percent(s.mtls.percent),
        s.mtls.mutual,
        s.mtls.plaintext,
        s.mtls.unknown,
        s.mtls.requests
    );
    let _ = writeln!(
        out,
        "- Findings: {} error, {} warning, {} info; {} plaintext edges, {} resilience gaps, {} recommendations\n",
        s.findings.error, s.findings.warning, s.findings.info, s.plaintext_edges, s.resilience_gaps, s.recommendations
    );

    if let Some(verdict) = &report.policy {
        let _ = writeln!(out, "## Policy\n");
        let rows: Vec<Vec<String>> = verdict
            .checks
            .iter()
            .map(|c| {
                vec![
                    if c.passed { "pass" } else { "FAIL" }.to_owned(),
                    c.rule.clone(),
                    c.subject.clone().unwrap_or_default(),
                    c.expected.clone(),
                    c.actual.clone(),
                ]
            })
            .collect();
        table(&mut out, &["Result", "Rule", "Subject", "Expected", "Actual"], &rows);
    }

    if let Some(trend) = &report.trend {
        let _ = writeln!(
            out,
            "## Trend since report #{} ({})\n",
            trend.previous_id,
            trend.previous_generated_at.to_rfc3339()
        );
        let change = |name: &str, p: Option<String>, c: Option<String>, d: String| {
            vec![name.to_owned(), p.unwrap_or_else(|| "n/a".into()), c.unwrap_or_else(|| "n/a".into()), d]
        };
        let count = |c: &super::super::trend::Change<i64>, name: &str| {
            change(
                name,
                c.previous.map(|v| v.to_string()),
                c.current.map(|v| v.to_string()),
                signed(c.delta.map(|d| d as f64)),
            )
        };
        let rows = vec![
            change(
                "mTLS %",
                trend.mtls_percent.previous.map(|v| trim_float(v, 3)),
                trend.mtls_percent.current.map(|v| trim_float(v, 3)),
                signed(trend.mtls_percent.delta),
            ),
            count(&trend.plaintext_requests, "Plaintext requests"),
            count(&trend.findings_error, "Error findings"),
            count(&trend.findings_warning, "Warning findings"),
            count(&trend.findings_info, "Info findings"),
        ];
        table(&mut out, &["Figure", "Previous", "Current", "Change"], &rows);
        for (label, keys) in [("New findings", &trend.new_findings), ("Resolved findings", &trend.resolved_findings)] {
            if !keys.is_empty() {
                let _ = writeln!(out, "{label}:\n");
                for k in keys {
                    let _ = writeln!(out, "- {} `{}` {}", k.level, k.code, k.resource);
                }
                out.push('\n');
            }
        }
        if trend.config_changed {
            let _ = writeln!(out, "The configuration changed since the previous report.\n");
        }
    }

    let _ = writeln!(out, "## mTLS by namespace\n");
    let rows: Vec<Vec<String>> = report
        .mtls
        .namespaces
        .iter()
        .map(|n| {
            vec![
                n.namespace.clone(),
                n.observed.requests.to_string(),
                percent(n.observed.percent),
                n.observed.plaintext.to_string(),
                n.observed.unknown.to_string(),
                n.configured_modes.join(", "),
                n.classification.clone(),
            ]
        })
        .collect();
    table(&mut out, &["Namespace", "Requests", "mTLS", "Plaintext", "Unknown", "Configured", "Classification"], &rows);

    let _ = writeln!(out, "## Plaintext edges\n");
    if report.plaintext_edges.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .plaintext_edges
            .iter()
            .map(|e| {
                vec![
                    e.source.clone(),
                    e.source_principal.clone().unwrap_or_default(),
                    e.destination.clone(),
                    e.destination_principals.join(", "),
                    format!("{}/{}", e.plaintext_requests, e.requests),
                    e.configured_mode.clone(),
                    e.classification.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "Source",
                "Source principal",
                "Destination",
                "Destination principals",
                "Plaintext",
                "Configured",
                "Classification",
            ],
            &rows,
        );
    }

    let _ = writeln!(out, "## Findings\n");
    if report.findings.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .findings
            .iter()
            .map(|f| vec![f.level.to_string(), f.code.clone(), f.resource.clone(), f.message.clone()])
            .collect();
        table(&mut out, &["Level", "Code", "Resource", "Message"], &rows);
    }

    let _ = writeln!(out, "## Resilience gaps\n");
    if report.resilience_gaps.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .resilience_gaps
            .iter()
            .map(|g| vec![g.service.clone(), g.requests.to_string(), g.gaps.join("; ")])
            .collect();
        table(&mut out, &["Service", "Requests", "Gaps"], &rows);
    }
    for a in &report.retry_amplification {
        let _ = writeln!(out, "- Retry amplification: {} (up to {} tries)", a.chain.join(" → "), a.worst_case_tries);
    }

    let _ = writeln!(out, "## Recommendations\n");
    if report.recommendations.is_empty() {
        let _ = writeln!(out, "None.\n");
    }
    for r in &report.recommendations {
        let _ = writeln!(out, "### {}: {}\n", r.kind, r.target);
        let _ = writeln!(out, "{} (confidence {}), {}\n", r.value, r.confidence, r.formula);
        let _ = writeln!(out, "```yaml\n{}\n```\n", r.patch.trim_end());
    }
    out
}
