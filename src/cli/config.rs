//! `meshlens config ...`: work with mesh configuration files.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load mesh config and print what was loaded: counts per kind, skipped kinds and errors with their
    /// locations. Exits 1 when any document failed to load.
    Check {
        /// Files or directories (searched recursively for .yaml, .yml and .json) to load; `-` reads stdin.
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
}

impl ConfigCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            ConfigCommand::Check { paths } => {
                let _ = paths;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
