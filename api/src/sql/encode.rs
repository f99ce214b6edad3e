//! The three answers of `POST /api/v1/query`: typed JSON, CSV and the Arrow IPC stream.

use super::QueryResult;
use crate::error::ApiError;
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Whether the JSON and CSV writers have no encoding of their own for this type (binary, durations,
/// intervals, times of day, nested values for CSV); such columns are sent as their text form.
fn needs_text(data_type: &DataType, csv: bool) -> bool {
    match data_type {
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_)
        | DataType::Duration(_)
        | DataType::Interval(_)
        | DataType::Time32(_)
        | DataType::Time64(_) => true,
        DataType::Dictionary(_, value) => needs_text(value, csv),
        other => csv && other.is_nested(),
    }
}

/// The column's values as text, as Arrow displays them; nulls stay null.
fn as_text(column: &ArrayRef) -> Result<ArrayRef, ApiError> {
    let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).map_err(ApiError::internal)?;
    let values: StringArray =
        (0..column.len()).map(|i| column.is_valid(i).then(|| formatter.value(i).to_string())).collect();
    Ok(Arc::new(values))
}

/// `batch` with the columns the writers cannot encode turned into text, and (for JSON) named by position so
/// that duplicate names (`SELECT 1, 1`) stay apart.
fn writable(batch: &RecordBatch, csv: bool) -> Result<RecordBatch, ApiError> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (i, (field, column)) in batch.schema().fields().iter().zip(batch.columns()).enumerate() {
        let name = if csv { field.name().clone() } else { i.to_string() };
        if needs_text(field.data_type(), csv) {
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(as_text(column)?);
        } else {
            fields.push(field.as_ref().clone().with_name(name));
            columns.push(Arc::clone(column));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(ApiError::internal)
}

/// `{"columns":[{"name","type","nullable"}],"rows":[[...]],"row_count","truncated","elapsed_ms"}`; `type` is
/// the Arrow type (`Int64`, `Utf8`, `Timestamp(µs, "UTC")`, ...), values are JSON numbers, strings
/// (timestamps in RFC 3339), booleans, arrays or null.
pub(super) fn json(result: &QueryResult) -> Result<Vec<u8>, ApiError> {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable() }))
        .collect();
    let width = result.schema.fields().len();
    let mut rows: Vec<Value> = Vec::with_capacity(result.rows);
    for batch in result.batches.iter().filter(|b| b.num_rows() > 0) {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        writer.write(&writable(batch, false)?).map_err(ApiError::internal)?;
        writer.finish().map_err(ApiError::internal)?;
        let objects: Vec<Map<String, Value>> =
            serde_json::from_slice(&writer.into_inner()).map_err(ApiError::internal)?;
        rows.extend(objects.into_iter().map(|mut object| {
            Value::Array((0..width).map(|i| object.remove(&i.to_string()).unwrap_or(Value::Null)).collect())
        }));
    }
    let body = json!({
        "columns": columns,
        "rows": rows,
        "row_count": result.rows,
        "truncated": result.truncated,
        "elapsed_ms": result.elapsed.as_millis() as u64,
    });
    serde_json::to_vec(&body).map_err(ApiError::internal)
}

/// CSV with a header line (also for an empty result); lists and other values CSV has no form for are
/// written as text (`[UO, URX]`).
pub(super) fn csv(result: &QueryResult) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
        if result.rows == 0 {
            writer
                .write(&writable(&RecordBatch::new_empty(Arc::clone(&result.schema)), true)?)
                .map_err(ApiError::internal)?;
        }
        for batch in result.batches.iter().filter(|b| b.num_rows() > 0) {
            writer.write(&writable(batch, true)?).map_err(ApiError::internal)?;
        }
    }
    Ok(out)
}

/// The Arrow IPC stream format: the schema, then the batches, as `pyarrow.ipc.open_stream` or
/// `arrow::ipc::reader::StreamReader` read it.
pub(super) fn arrow_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ApiError> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(ApiError::internal)?;
    for batch in batches {
        writer.write(batch).map_err(ApiError::internal)?;
    }
    writer.finish().map_err(ApiError::internal)?;
    writer.into_inner().map_err(ApiError::internal)
}
