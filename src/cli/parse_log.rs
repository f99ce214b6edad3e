//! `meshlens parse-log`: access-log lines in, normalized request records (NDJSON) out.

use anyhow::Context;
use clap::builder::PossibleValuesParser;
use clap::builder::TypedValueParser;
use meshlens_collector::{LineFormat, LineParser, LineReader};
use meshlens_model::Reporter;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 when every non-blank line parsed, 1 when some lines failed (each is \
                        reported on stderr as `error: FILE:LINE: reason` and skipped), 2 when the input \
                        could not be read.")]
pub struct ParseLogArgs {
    /// Format of the input lines.
    #[arg(long, value_enum, default_value_t = LineFormat::Auto)]
    format: LineFormat,

    /// Report every record as seen by this proxy instead of deriving the reporter from the direction (e.g.
    /// `gateway` for an ingress gateway's log, whose lines look like a client sidecar's).
    #[arg(long, value_parser = PossibleValuesParser::new(["source", "destination", "gateway"])
        .try_map(|s| s.parse::<Reporter>()))]
    reporter: Option<Reporter>,

    /// Access-log file to read; `-` reads stdin.
    #[arg(value_name = "FILE")]
    input: PathBuf,
}

impl ParseLogArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let parser = LineParser { format: self.format, reporter: self.reporter };
        let (name, input): (String, Box<dyn BufRead>) = if self.input.as_os_str() == "-" {
            ("<stdin>".into(), Box::new(io::stdin().lock()))
        } else {
            let file = File::open(&self.input).with_context(|| format!("opening {}", self.input.display()))?;
            (self.input.display().to_string(), Box::new(BufReader::with_capacity(256 * 1024, file)))
        };
        let failed = match convert(parser, &name, input, &mut BufWriter::new(io::stdout().lock())) {
            Ok(failed) => failed,
            // The reader went away (`| head`): nothing more to say, and nothing failed to parse.
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
            Err(err) => return Err(anyhow::Error::new(err).context(format!("parsing {name}"))),
        };
        Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
}

/// Writes one JSON record per parsed line to `out`, reports bad lines on stderr, and returns how many failed.
fn convert(parser: LineParser, name: &str, input: impl BufRead, out: &mut impl Write) -> io::Result<u64> {
    let mut lines = LineReader::new(input);
    let mut failed = 0;
    while let Some((number, line)) = lines.next_line()? {
        let record = match line {
            Ok(bytes) if bytes.trim_ascii().is_empty() => continue,
            Ok(bytes) => parser.parse_bytes(bytes),
            Err(err) => Err(err),
        };
        match record {
            Ok(record) => {
                serde_json::to_writer(&mut *out, &record).map_err(io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Err(err) => {
                failed += 1;
                eprintln!("error: {name}:{number}: {err}");
            }
        }
    }
    out.flush()?;
    Ok(failed)
}
