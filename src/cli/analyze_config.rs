//! `meshlens analyze-config`: static checks of mesh configuration, istioctl's (`IST` codes) and meshlens'
//! own (`ML` codes).

use anyhow::Context;
use clap::ValueEnum;
use meshlens_analyzer::config::{CHECKS, ConfigAnalyzer};
use meshlens_analyzer::{Finding, Level};
use meshlens_model::mesh::{LoadError, LoadReport, MeshSettings};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_long_help = long_help())]
pub struct AnalyzeConfigArgs {
    /// Istio MeshConfig file (the `mesh` key of the `istio` ConfigMap, as for `istioctl analyze
    /// --meshConfigFile`); sets e.g. the root namespace.
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,

    /// Files or directories (searched recursively for .yaml, .yml and .json) to analyze; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    /// Exit with status 1 when a finding is at this level or above.
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    fail_on: FailOn,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// One line per finding, most severe first, then by resource.
    Table,
    /// `{"findings": [...], "load_errors": [...], "skipped": N}`.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailOn {
    Error,
    Warning,
    Info,
}

impl From<FailOn> for Level {
    fn from(fail_on: FailOn) -> Level {
        match fail_on {
            FailOn::Error => Level::Error,
            FailOn::Warning => Level::Warning,
            FailOn::Info => Level::Info,
        }
    }
}

/// The checks and their codes, and the exit status, for `--help`.
fn long_help() -> String {
    let mut help = String::from(
        "Documents that fail to load are reported with file, line and field; the rest is still analyzed.\n\n\
         Exit status: 0 when no finding reaches --fail-on and everything loaded; 1 when a finding reaches \
         --fail-on or a document failed to load; 2 when meshlens could not run (e.g. stdin unreadable).\n\n\
         Checks (codes are explained in docs/findings.md):\n",
    );
    for check in CHECKS {
        let codes: Vec<&str> = check.codes.iter().map(|c| c.code).collect();
        help.push_str(&format!("  {:<52} {}\n      {}\n", check.name, codes.join(" "), check.description));
    }
    help
}

pub fn run(args: AnalyzeConfigArgs) -> anyhow::Result<ExitCode> {
    let mut report = super::config::load(&args.paths)?;
    let settings = match &args.mesh_config {
        None => MeshSettings::default(),
        Some(path) => MeshSettings::load(path).unwrap_or_else(|error| {
            // Like a broken document: say where, and go on with Istio's defaults.
            report.errors.push(*error);
            MeshSettings::default()
        }),
    };
    let findings = ConfigAnalyzer::new(settings).analyze(&report);
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let json = JsonReport {
                findings: &findings,
                load_errors: report.errors.iter().map(load_error_json).collect(),
                skipped: report.skipped.len(),
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?).context("writing output")?;
        }
        OutputFormat::Table => write_table(&mut out, &findings, &report).context("writing output")?,
    }
    let threshold = Level::from(args.fail_on);
    let failed = !report.errors.is_empty() || findings.iter().any(|f| f.level >= threshold);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `-o json`: findings keep their field order (code, level, resource, message, origin, fix).
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    findings: &'a [Finding],
    load_errors: Vec<serde_json::Value>,
    /// Documents of kinds meshlens does not model.
    skipped: usize,
}

fn load_error_json(error: &LoadError) -> serde_json::Value {
    serde_json::json!({
        "location": error.to_string(), "file": error.file, "line": error.line, "column": error.column,
        "document": error.document, "resource": error.resource, "field": error.field, "message": error.message,
    })
}

fn write_table(out: &mut impl Write, findings: &[Finding], report: &LoadReport) -> std::io::Result<()> {
    if !report.errors.is_empty() {
        writeln!(out, "{} documents could not be loaded and were not analyzed:", report.errors.len())?;
        for error in &report.errors {
            writeln!(out, "  {error}")?;
        }
        writeln!(out)?;
    }
    if !report.skipped.is_empty() {
        let kinds: Vec<String> =
            report.skipped_by_type().into_iter().map(|(kind, n)| format!("{kind} ({n})")).collect();
        writeln!(
            out,
            "Skipped {} documents of kinds meshlens does not model: {}",
            report.skipped.len(),
            kinds.join(", ")
        )?;
        writeln!(out)?;
    }
    if findings.is_empty() {
        return writeln!(out, "No findings in {} resources.", report.resources.len());
    }
    let width = |f: fn(&Finding) -> usize, header: &str| findings.iter().map(f).max().unwrap_or(0).max(header.len());
    let resource_width = width(|f| f.resource.len(), "RESOURCE");
    let origin_width = width(|f| f.origin.as_deref().map_or(1, str::len), "ORIGIN");
    writeln!(
        out,
        "{:<7}  {:<7}  {:<resource_width$}  {:<origin_width$}  MESSAGE",
        "LEVEL", "CODE", "RESOURCE", "ORIGIN"
    )?;
    for finding in findings {
        let origin = finding.origin.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{:<7}  {:<7}  {:<resource_width$}  {origin:<origin_width$}  {}",
            finding.level.as_str(),
            finding.code,
            finding.resource,
            finding.message
        )?;
    }
    let count = |level: Level| findings.iter().filter(|f| f.level == level).count();
    writeln!(
        out,
        "\n{} findings: {} errors, {} warnings, {} info. Fixes: `-o json` or docs/findings.md.",
        findings.len(),
        count(Level::Error),
        count(Level::Warning),
        count(Level::Info)
    )
}
