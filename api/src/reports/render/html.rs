//! HTML: one self-contained page (inline CSS, inline SVG charts, no scripts, no external assets) that can
//! be mailed, attached or archived and still open the same way. The markup is also well-formed XML, so
//! tools and tests can parse it strictly.

use super::super::model::{Coverage, LevelCounts, Report};
use super::{percent, signed, title, trim_float, verdict_text};
use std::fmt::Write;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#1d2330;\
max-width:1200px}h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid \
#dde1e8;padding-bottom:.3rem}table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;\
padding:.3rem .5rem;border-bottom:1px solid #eceff3;vertical-align:top}th{background:#f5f7fa}td.num{text-align:right;\
font-variant-numeric:tabular-nums}.meta{color:#5b6474;font-size:.9rem}.cards{display:flex;gap:1rem;flex-wrap:wrap;\
margin:1rem 0}.card{border:1px solid #dde1e8;border-radius:6px;padding:.7rem 1rem;min-width:9rem}.card .v{font-size:\
1.5rem;font-weight:600}.card .l{color:#5b6474;font-size:.8rem}.pass{color:#1a7f37}.fail{color:#c62828}.none{color:\
#5b6474}.Error{color:#c62828;font-weight:600}.Warning{color:#b26a00}.Info{color:#3d5a80}pre{background:#f5f7fa;\
padding:.6rem;overflow-x:auto;font-size:.8rem}svg text{font-family:inherit;font-size:12px;fill:#1d2330}";

/// Text for an element or attribute.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0 text.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn table(out: &mut String, headers: &[&str], rows: &[Vec<Cell>]) {
    out.push_str("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            match cell {
                Cell::Text(t) => {
                    let _ = write!(out, "<td>{}</td>", esc(t));
                }
                Cell::Num(t) => {
                    let _ = write!(out, "<td class=\"num\">{}</td>", esc(t));
                }
                Cell::Class(class, t) => {
                    let _ = write!(out, "<td class=\"{}\">{}</td>", esc(class), esc(t));
                }
                Cell::Pre(t) => {
                    let _ = write!(out, "<td><pre>{}</pre></td>", esc(t));
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

enum Cell {
    Text(String),
    Num(String),
    Class(&'static str, String),
    Pre(String),
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

fn num(s: impl ToString) -> Cell {
    Cell::Num(s.to_string())
}

fn card(out: &mut String, value: &str, label: &str, class: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><div class=\"v {}\">{}</div><div class=\"l\">{}</div></div>",
        class,
        esc(value),
        esc(label)
    );
}

/// Stacked horizontal bars: per namespace, the shares of mutual, plaintext and unknown requests.
fn mtls_chart(out: &mut String, overall: &Coverage, namespaces: &[(String, Coverage)]) {
    const LABEL: f64 = 180.0;
    const WIDTH: f64 = 520.0;
    const ROW: f64 = 26.0;
    let rows: Vec<(&str, &Coverage)> =
        std::iter::once(("overall", overall)).chain(namespaces.iter().map(|(n, c)| (n.as_str(), c))).collect();
    let height = ROW * rows.len() as f64 + 30.0;
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"mTLS share by namespace\" width=\"{w}\" \
         height=\"{height}\" viewBox=\"0 0 {w} {height}\">",
        w = LABEL + WIDTH + 90.0
    );
    for (i, (name, c)) in rows.iter().enumerate() {
        let y = i as f64 * ROW;
        let _ = write!(out, "<text x=\"0\" y=\"{}\">{}</text>", y + 15.0, esc(name));
        let total = c.requests.max(1) as f64;
        let mut x = LABEL;
        for (count, color, what) in
            [(c.mutual, "#2e7d32", "mutual"), (c.plaintext, "#c62828", "plaintext"), (c.unknown, "#9aa3b2", "unknown")]
        {
            let w = WIDTH * count as f64 / total;
            if w > 0.0 {
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"18\" fill=\"{color}\"><title>{} {what}</title></rect>",
                    y + 2.0,
                    count
                );
            }
            x += w;
        }
        if c.requests == 0 {
            let _ = write!(
                out,
                "<rect x=\"{LABEL}\" y=\"{:.1}\" width=\"{WIDTH}\" height=\"18\" fill=\"#eceff3\"/>",
                y + 2.0
            );
        }
        let _ =
            write!(out, "<text x=\"{}\" y=\"{}\">{}</text>", LABEL + WIDTH + 6.0, y + 15.0, esc(&percent(c.percent)));
    }
    let legend_y = ROW * rows.len() as f64 + 18.0;
    for (i, (color, what)) in
        [("#2e7d32", "mutual"), ("#c62828", "plaintext"), ("#9aa3b2", "unknown")].iter().enumerate()
    {
        let x = LABEL + i as f64 * 110.0;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"{legend_y}\">{what}</text>",
            legend_y - 10.0,
            x + 16.0
        );
    }
    out.push_str("</svg>");
}

/// Vertical bars of findings per level; with a previous report, its bars beside the current ones.
fn findings_chart(out: &mut String, current: &LevelCounts, previous: Option<&LevelCounts>) {
    const HEIGHT: f64 = 140.0;
    let levels = [("Error", "#c62828"), ("Warning", "#ef8f00"), ("Info", "#3d5a80")];
    let value = |c: &LevelCounts, i: usize| [c.error, c.warning, c.info][i];
    let max = (0..3).map(|i| value(current, i).max(previous.map_or(0, |p| value(p, i)))).max().unwrap_or(0).max(1);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"findings by level\" width=\"360\" \
         height=\"{}\" viewBox=\"0 0 360 {}\">",
        HEIGHT + 40.0,
        HEIGHT + 40.0
    );
    for (i, (name, color)) in levels.iter().enumerate() {
        let x = 20.0 + i as f64 * 110.0;
        let mut bars = vec![(value(current, i), *color, "now", x + 36.0)];
        if let Some(p) = previous {
            bars.push((value(p, i), "#c3c9d4", "previous", x));
        }
        for (v, fill, when, bx) in bars {
            let h = HEIGHT * v as f64 / max as f64;
            let y = HEIGHT - h + 14.0;
            let _ = write!(
                out,
                "<rect x=\"{bx}\" y=\"{y:.1}\" width=\"32\" height=\"{h:.1}\" fill=\"{fill}\"><title>{v} {name} ({when})</title></rect>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\">{v}</text>",
                bx + 16.0,
                y - 2.0
            );
        }
        let _ = write!(out, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{name}</text>", x + 34.0, HEIGHT + 32.0);
    }
    out.push_str("</svg>");
}

/// The overall mTLS share then and now, as a two-point line.
fn mtls_trend_chart(out: &mut String, previous: f64, current: f64) {
    let lo = previous.min(current).floor().max(0.0) - 1.0;
    let hi = 100.0f64.max(previous.max(current));
    let span = (hi - lo).max(1.0);
    let y = |v: f64| 10.0 + 100.0 * (hi - v) / span;
    let (y1, y2) = (y(previous), y(current));
    let color = if current >= previous { "#2e7d32" } else { "#c62828" };
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"mTLS share, previous and current\" \
         width=\"360\" height=\"140\" viewBox=\"0 0 360 140\"><line x1=\"60\" y1=\"{y1:.1}\" x2=\"300\" y2=\"{y2:.1}\" \
         stroke=\"{color}\" stroke-width=\"3\"/><circle cx=\"60\" cy=\"{y1:.1}\" r=\"5\" fill=\"{color}\"/>\
         <circle cx=\"300\" cy=\"{y2:.1}\" r=\"5\" fill=\"{color}\"/><text x=\"60\" y=\"132\" text-anchor=\"middle\">\
         previous {}</text><text x=\"300\" y=\"132\" text-anchor=\"middle\">now {}</text></svg>",
        esc(&percent(Some(previous))),
        esc(&percent(Some(current)))
    );
}

pub fn render(report: &Report, id: Option<i64>) -> String {
    let s = &report.summary;
    let title = title(report, id);
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"/><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = write!(out, "<h1>{}</h1>", esc(&title));
    let _ = write!(
        out,
        "<p class=\"meta\">Window {} — {} · generated {} · configuration <code>{}</code></p>",
        esc(&report.window.start.to_rfc3339()),
        esc(&report.window.end.to_rfc3339()),
        esc(&report.generated_at.to_rfc3339()),
        esc(&report.config.hash)
    );

    out.push_str("<div class=\"cards\">");
    let verdict = verdict_text(report);
    let verdict_class = match &report.policy {
        None => "none",
        Some(v) if v.passed => "pass",
        Some(_) => "fail",
    };
    card(&mut out, verdict, "policy verdict", verdict_class);
    card(&mut out, &percent(s.mtls.percent), "mTLS (of known)", "");
    card(&mut out, &s.mtls.requests.to_string(), "requests", "");
    card(&mut out, &s.mtls.plaintext.to_string(), "plaintext requests", if s.mtls.plaintext > 0 { "fail" } else { "" });
    card(&mut out, &s.findings.error.to_string(), "error findings", if s.findings.error > 0 { "fail" } else { "" });
    card(&mut out, &s.findings.warning.to_string(), "warning findings", "");
    card(&mut out, &s.resilience_gaps.to_string(), "resilience gaps", "");
    card(&mut out, &s.recommendations.to_string(), "recommendations", "");
    out.push_str("</div>");

    if let Some(verdict) = &report.policy {
        out.push_str("<h2>Policy</h2>");
        let rows: Vec<Vec<Cell>> = verdict
            .checks
            .iter()
            .map(|c| {
                vec![
                    if c.passed { Cell::Class("pass", "pass".into()) } else { Cell::Class("fail", "FAIL".into()) },
                    text(c.rule.clone()),
                    text(c.subject.clone().unwrap_or_default()),
                    text(c.expected.clone()),
                    text(c.actual.clone()),
                ]
            })
            .collect();
        table(&mut out, &["Result", "Rule", "Subject", "Expected", "Actual"], &rows);
    }

    out.push_str("<h2>mTLS coverage</h2>");
    let namespaces: Vec<(String, Coverage)> =
        report.mtls.namespaces.iter().map(|n| (n.namespace.clone(), n.observed)).collect();
    mtls_chart(&mut out, &report.mtls.overall, &namespaces);
    let rows: Vec<Vec<Cell>> = report
        .mtls
        .namespaces
        .iter()
        .map(|n| {
            vec![
                text(n.namespace.clone()),
                num(n.observed.requests),
                num(percent(n.observed.percent)),
                num(n.observed.plaintext),
                num(n.observed.unknown),
                text(n.configured_modes.join(", ")),
                text(n.classification.clone()),
            ]
        })
        .collect();
    table(&mut out, &["Namespace", "Requests", "mTLS", "Plaintext", "Unknown", "Configured", "Classification"], &rows);

    if let Some(trend) = &report.trend {
        let _ = write!(
            out,
            "<h2>Trend since report #{} ({})</h2>",
            trend.previous_id,
            esc(&trend.previous_generated_at.to_rfc3339())
        );
        if let (Some(p), Some(c)) = (trend.mtls_percent.previous, trend.mtls_percent.current) {
            mtls_trend_chart(&mut out, p, c);
        }
        let count = |name: &str, c: &super::super::trend::Change<i64>| {
            vec![
                text(name),
                num(c.previous.map_or_else(|| "n/a".into(), |v| v.to_string())),
                num(c.current.map_or_else(|| "n/a".into(), |v| v.to_string())),
                num(signed(c.delta.map(|d| d as f64))),
            ]
        };
        let rows = vec![
            vec![
                text("mTLS %"),
                num(trend.mtls_percent.previous.map_or_else(|| "n/a".into(), |v| trim_float(v, 3))),
                num(trend.mtls_percent.current.map_or_else(|| "n/a".into(), |v| trim_float(v, 3))),
                num(signed(trend.mtls_percent.delta)),
            ],
            count("Plaintext requests", &trend.plaintext_requests),
            count("Error findings", &trend.findings_error),
            count("Warning findings", &trend.findings_warning),
            count("Info findings", &trend.findings_info),
        ];
        table(&mut out, &["Figure", "Previous", "Current", "Change"], &rows);
        for (label, keys) in [("New findings", &trend.new_findings), ("Resolved findings", &trend.resolved_findings)] {
            if !keys.is_empty() {
                let _ = write!(out, "<h3>{label}</h3><ul>");
                for k in keys {
                    let _ = write!(
                        out,
                        "<li><span class=\"{}\">{}</span> <code>{}</code> {}</li>",
                        k.level,
                        k.level,
                        esc(&k.code),
                        esc(&k.resource)
                    );
                }
                out.push_str("</ul>");
            }
        }
        if trend.config_changed {
            out.push_str("<p>The configuration changed since the previous report.</p>");
        }
    }

    out.push_str("<h2>Plaintext edges</h2>");
    if report.plaintext_edges.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        let rows: Vec<Vec<Cell>> = report
            .plaintext_edges
            .iter()
            .map(|e| {
                vec![
                    text(e.source.clone()),
                    text(e.source_principal.clone().unwrap_or_default()),
                    text(e.destination.clone()),
                    text(e.destination_principals.join(", ")),
                    num(format!("{}/{}", e.plaintext_requests, e.requests)),
                    text(e.configured_mode.clone()),
                    text(e.classification.clone()),
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

    out.push_str("<h2>Findings</h2>");
    let previous_levels = report.trend.as_ref().map(|t| LevelCounts {
        error: t.findings_error.previous.unwrap_or(0) as u64,
        warning: t.findings_warning.previous.unwrap_or(0) as u64,
        info: t.findings_info.previous.unwrap_or(0) as u64,
    });
    findings_chart(&mut out, &s.findings, previous_levels.as_ref());
    if report.findings.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        let rows: Vec<Vec<Cell>> = report
            .findings
            .iter()
            .map(|f| {
                let class = match f.level {
                    meshlens_analyzer::Level::Error => "Error",
                    meshlens_analyzer::Level::Warning => "Warning",
                    meshlens_analyzer::Level::Info => "Info",
                };
                vec![
                    Cell::Class(class, f.level.to_string()),
                    text(f.code.clone()),
                    text(f.resource.clone()),
                    text(f.message.clone()),
                    text(f.origin.clone().unwrap_or_default()),
                ]
            })
            .collect();
        table(&mut out, &["Level", "Code", "Resource", "Message", "Origin"], &rows);
    }

    out.push_str("<h2>Resilience gaps</h2>");
    if report.resilience_gaps.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        let rows: Vec<Vec<Cell>> = report
            .resilience_gaps
            .iter()
            .map(|g| {
                vec![
                    text(g.service.clone()),
                    num(g.requests),
                    num(g.server_errors),
                    num(g.timeouts),
                    num(g.p99_ms.map_or_else(|| "n/a".into(), |v| format!("{} ms", trim_float(v, 1)))),
                    text(g.gaps.join("; ")),
                ]
            })
            .collect();
        table(&mut out, &["Service", "Requests", "5xx", "Timeouts", "p99", "Gaps"], &rows);
    }
    if !report.retry_amplification.is_empty() {
        out.push_str("<ul>");
        for a in &report.retry_amplification {
            let _ = write!(
                out,
                "<li>Retry amplification: {} (up to {} tries, observed {})</li>",
                esc(&a.chain.join(" → ")),
                a.worst_case_tries,
                a.observed_max_tries
            );
        }
        out.push_str("</ul>");
    }

    out.push_str("<h2>Recommendations</h2>");
    if report.recommendations.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        let rows: Vec<Vec<Cell>> = report
            .recommendations
            .iter()
            .map(|r| {
                vec![
                    text(r.kind.clone()),
                    text(r.target.clone()),
                    text(r.value.to_string()),
                    text(r.confidence.clone()),
                    text(r.formula.clone()),
                    Cell::Pre(r.patch.clone()),
                ]
            })
            .collect();
        table(&mut out, &["Kind", "Target", "Value", "Confidence", "Formula", "Patch"], &rows);
    }

    out.push_str("<h2>Configuration</h2>");
    let rows: Vec<Vec<Cell>> =
        report.config.resources.iter().map(|(kind, n)| vec![text(kind.clone()), num(n)]).collect();
    table(&mut out, &["Kind", "Resources"], &rows);
    if report.config.load_errors > 0 {
        let _ =
            write!(out, "<p class=\"fail\">{} configuration documents failed to load.</p>", report.config.load_errors);
    }
    out.push_str("</body></html>\n");
    out
}
