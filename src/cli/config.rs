//! `meshlens config ...`: work with mesh configuration files.

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use meshlens_model::mesh::LoadReport;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load mesh config and print what was loaded: counts per kind, skipped kinds, and errors with file,
    /// line, document, resource and field. Exits 0 when everything loaded, 1 when any document failed.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Files or directories (searched recursively for .yaml, .yml and .json) to load; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// A human-readable summary.
    Table,
    /// `{"counts": {...}, "skipped": [...], "errors": [...]}`.
    Json,
}

impl ConfigCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            ConfigCommand::Check(args) => check(args),
        }
    }
}

/// Loads the given paths; `-` stands for stdin.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<LoadReport> {
    let mut report = LoadReport::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading mesh config from stdin")?;
            report.parse_str("<stdin>", &text);
        } else {
            let one = LoadReport::load_paths(std::slice::from_ref(path));
            report.resources.extend(one.resources);
            report.skipped.extend(one.skipped);
            report.errors.extend(one.errors);
        }
    }
    Ok(report)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = load(&args.paths)?;
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let counts: serde_json::Map<String, serde_json::Value> =
                report.counts_by_kind().into_iter().map(|(k, n)| (k.to_string(), n.into())).collect();
            let json = serde_json::json!({
                "counts": counts,
                "skipped": report.skipped,
                "errors": report.errors.iter().map(|e| serde_json::json!({
                    "location": e.to_string(), "file": e.file, "line": e.line, "column": e.column,
                    "document": e.document, "resource": e.resource, "field": e.field, "message": e.message,
                })).collect::<Vec<_>>(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
        OutputFormat::Table => write_summary(&mut out, &report)?,
    }
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn write_summary(out: &mut impl Write, report: &LoadReport) -> std::io::Result<()> {
    let files: std::collections::BTreeSet<&str> = report
        .resources
        .iter()
        .map(|r| r.origin.file.as_str())
        .chain(report.skipped.iter().map(|s| s.origin.file.as_str()))
        .collect();
    writeln!(out, "Loaded {} resources from {} files", report.resources.len(), files.len())?;
    for (kind, count) in report.counts_by_kind() {
        writeln!(out, "  {:<22} {count:>6}", kind.as_str())?;
    }
    if !report.skipped.is_empty() {
        writeln!(out, "Skipped {} documents of kinds meshlens does not model", report.skipped.len())?;
        for (kind, count) in report.skipped_by_type() {
            writeln!(out, "  {kind:<40} {count:>6}")?;
        }
    }
    if report.errors.is_empty() {
        writeln!(out, "No errors")?;
    } else {
        writeln!(out, "{} errors", report.errors.len())?;
        for error in &report.errors {
            writeln!(out, "  {error}")?;
        }
    }
    Ok(())
}
