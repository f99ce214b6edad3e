//! `meshlens query`: read-only SQL over the telemetry store (`requests` and `spans`).

use anyhow::Context;
use clap::ValueEnum;
use meshlens_store::arrow::array::RecordBatch;
use meshlens_store::arrow::compute::cast;
use meshlens_store::arrow::datatypes::{DataType, Field, Schema};
use meshlens_store::arrow::util::pretty::pretty_format_batches_with_schema;
use meshlens_store::{QueryOutput, Store, StoreConfig};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
#[command(after_help = "Tables: `requests` (one row per request record; columns are the record's fields, as \
                        printed by `meshlens parse-log`) and `spans`. Only queries run: CREATE, INSERT, COPY, \
                        SET and the like are rejected. The store is opened read-only, so this works while a \
                        collector is writing to the same directory; it sees the data acknowledged up to the \
                        moment it starts.")]
pub struct QueryArgs {
    /// The SQL query, e.g. "SELECT destination_service, count(*) FROM requests GROUP BY 1".
    #[arg(value_name = "SQL")]
    sql: String,

    /// Store data directory.
    #[arg(long, value_name = "DIR", default_value = "./meshlens-data")]
    data_dir: PathBuf,

    /// Catalog database (postgres://... or sqlite:PATH); default: the SQLite catalog in the data directory.
    #[arg(long, value_name = "URL", env = "MESHLENS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// An aligned text table.
    Table,
    /// A JSON array with one object per row (nulls included).
    Json,
    /// CSV with a header line.
    Csv,
}

impl QueryArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
        let config = StoreConfig { database_url: self.database_url.clone(), ..StoreConfig::new(&self.data_dir) };
        let output = runtime.block_on(async {
            let store = Store::open_read_only(config).await?;
            anyhow::Ok(store.sql(&self.sql).await?)
        })?;
        match write(&output, self.output, &mut BufWriter::new(io::stdout().lock())) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            // The reader went away (`| head`): not an error of the query.
            Err(err) if err.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) => {
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => Err(err.context("writing the result")),
        }
    }
}

fn write(output: &QueryOutput, format: OutputFormat, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", pretty_format_batches_with_schema(output.schema.clone(), &output.batches)?)?;
        }
        OutputFormat::Json => {
            let mut writer = meshlens_store::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, meshlens_store::arrow::json::writer::JsonArray>(&mut *out);
            for batch in &output.batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            drop(writer);
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            let mut writer = meshlens_store::arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            if output.num_rows() == 0 {
                // An empty result still gets its header line.
                writer.write(&nested_as_text(&RecordBatch::new_empty(output.schema.clone()))?)?;
            }
            for batch in output.batches.iter().filter(|b| b.num_rows() > 0) {
                writer.write(&nested_as_text(batch)?)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// CSV has no lists or structs: such columns (e.g. `response_flags`) are written as their text form,
/// `[UO, URX]`.
fn nested_as_text(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    if !batch.schema().fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            fields.push(Field::new(field.name(), DataType::Utf8, field.is_nullable()));
            columns.push(cast(column, &DataType::Utf8)?);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
