//! Policies: the thresholds a report passes or fails, read from a YAML (or JSON) file, and the
//! [`Verdict`] of a report against them. Every rule is optional; a policy with none passes everything.
//! Unknown fields, wrong types and out-of-range values are errors located by line, column and field path,
//! so a typo never silently turns a rule off. The format is documented in docs/reports.md.

use super::model::Report;
use meshlens_analyzer::Level;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The thresholds of a policy file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Least overall mTLS share, in percent of the requests whose mTLS is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_min_percent: Option<Percent>,
    /// Least mTLS share of every destination namespace that received traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_mtls_min_percent: Option<Percent>,
    /// Most requests whose mTLS nothing observed, in percent of all requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unknown_percent: Option<Percent>,
    /// Most findings per level; a level left out is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_findings: Option<MaxFindings>,
    /// Namespaces into which no plaintext request may arrive; `"*"` means every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbid_plaintext_namespaces: Vec<String>,
    /// Finding codes that fail the policy whenever they occur (e.g. `ML2001`, `IST0102`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbid_codes: Vec<String>,
    /// Fewest requests the window must hold: a window without traffic proves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxFindings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<u64>,
}

/// A percentage, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Percent(f64);

impl Percent {
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Percent {
    type Error = String;

    fn try_from(value: f64) -> Result<Self, String> {
        if (0.0..=100.0).contains(&value) {
            Ok(Percent(value))
        } else {
            Err(format!("a percentage must be between 0 and 100, found {value}"))
        }
    }
}

impl From<Percent> for f64 {
    fn from(p: Percent) -> f64 {
        p.0
    }
}

/// A policy file that does not parse, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Path of the offending field (`max_findings.warnings`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Parses a policy document (YAML, of which JSON is a subset); `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        if text.trim().is_empty() {
            return Ok(Policy::default());
        }
        let de = yaml_serde::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let location = err.inner().location();
            let path = err.path().to_string();
            // yaml_serde appends "at line L column C" to its messages; the location is shown in front.
            let message = err.inner().to_string();
            let mut message = match message.rfind(" at line ") {
                Some(at) if location.is_some() => message[..at].to_owned(),
                _ => message,
            };
            // yaml_serde also starts some messages with the path of the enclosing mapping, which the
            // `field` part already shows.
            let parent = path.rsplit_once('.').map_or("", |(parent, _)| parent);
            for prefix in [path.as_str(), parent] {
                if let Some(rest) = message.strip_prefix(prefix).and_then(|r| r.strip_prefix(": ")) {
                    message = rest.to_owned();
                    break;
                }
            }
            PolicyError {
                file: file.to_owned(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                field: Some(path).filter(|p| p != "."),
                message,
            }
        })
    }

    /// Reads and parses a policy file.
    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| PolicyError {
            file: file.clone(),
            line: None,
            column: None,
            field: None,
            message: format!("cannot read: {err}"),
        })?;
        Policy::parse(&file, &text)
    }

    /// A policy given inside a JSON request: an object with the file's fields, or the file's text as a
    /// string. Errors name the field path under `policy`.
    pub fn from_json(value: &serde_json::Value) -> Result<Policy, PolicyError> {
        match value {
            serde_json::Value::String(text) => Policy::parse("policy", text),
            other => serde_path_to_error::deserialize(other).map_err(|err| PolicyError {
                file: "policy".to_owned(),
                line: None,
                column: None,
                field: Some(err.path().to_string()).filter(|p| p != "."),
                message: err.inner().to_string(),
            }),
        }
    }

    /// Checks `report` against every rule the policy sets.
    pub fn evaluate(&self, report: &Report) -> Verdict {
        let mut checks = Vec::new();
        let pct = |v: Option<f64>| v.map_or_else(|| "no traffic with known mTLS".to_owned(), |v| format!("{v:.3}%"));
        if let Some(min) = self.min_requests {
            let requests = report.summary.mtls.requests;
            checks.push(Check::new("min_requests", None, requests >= min, format!("≥ {min}"), requests.to_string()));
        }
        if let Some(min) = self.mtls_min_percent {
            // Without known traffic there is nothing to hold against the threshold; `min_requests` is the
            // rule that fails empty windows.
            let actual = report.summary.mtls.percent;
            let passed = actual.is_none_or(|v| v >= min.value());
            checks.push(Check::new("mtls_min_percent", None, passed, format!("≥ {}%", min.value()), pct(actual)));
        }
        if let Some(min) = self.namespace_mtls_min_percent {
            for ns in &report.mtls.namespaces {
                let actual = ns.observed.percent;
                let passed = actual.is_none_or(|v| v >= min.value());
                checks.push(Check::new(
                    "namespace_mtls_min_percent",
                    Some(ns.namespace.clone()),
                    passed,
                    format!("≥ {}%", min.value()),
                    pct(actual),
                ));
            }
        }
        if let Some(max) = self.max_unknown_percent {
            let mtls = &report.summary.mtls;
            let actual = if mtls.requests == 0 { 0.0 } else { mtls.unknown as f64 * 100.0 / mtls.requests as f64 };
            checks.push(Check::new(
                "max_unknown_percent",
                None,
                actual <= max.value(),
                format!("≤ {}%", max.value()),
                format!("{actual:.3}%"),
            ));
        }
        if let Some(max) = self.max_findings {
            for (level, limit) in [(Level::Error, max.error), (Level::Warning, max.warning), (Level::Info, max.info)] {
                if let Some(limit) = limit {
                    let actual = report.summary.findings.get(level);
                    checks.push(Check::new(
                        "max_findings",
                        Some(level.as_str().to_ascii_lowercase()),
                        actual <= limit,
                        format!("≤ {limit}"),
                        actual.to_string(),
                    ));
                }
            }
        }
        for forbidden in &self.forbid_plaintext_namespaces {
            let plaintext: u64 = report
                .mtls
                .namespaces
                .iter()
                .filter(|ns| forbidden == "*" || &ns.namespace == forbidden)
                .map(|ns| ns.observed.plaintext)
                .sum();
            checks.push(Check::new(
                "forbid_plaintext_namespaces",
                Some(forbidden.clone()),
                plaintext == 0,
                "0 plaintext requests".to_owned(),
                format!("{plaintext} plaintext requests"),
            ));
        }
        for code in &self.forbid_codes {
            let found = report.findings.iter().filter(|f| f.code.eq_ignore_ascii_case(code)).count();
            checks.push(Check::new(
                "forbid_codes",
                Some(code.clone()),
                found == 0,
                "0 findings".to_owned(),
                format!("{found} findings"),
            ));
        }
        Verdict { passed: checks.iter().all(|c| c.passed), policy: self.clone(), checks }
    }
}

/// A report's result against a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every check passed.
    pub passed: bool,
    /// The policy as applied.
    pub policy: Policy,
    pub checks: Vec<Check>,
}

/// One rule applied to one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The policy field (`mtls_min_percent`, `max_findings`, ...).
    pub rule: String,
    /// What the rule was applied to, when it applies per namespace, level or code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
}

impl Check {
    fn new(rule: &str, subject: Option<String>, passed: bool, expected: String, actual: String) -> Check {
        Check { rule: rule.to_owned(), subject, passed, expected, actual }
    }
}
