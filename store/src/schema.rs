//! Arrow schemas of the `requests` and `spans` tables, derived from the model, and the builders that turn
//! model records into `RecordBatch`es.
//!
//! Column names are the model's field names (a public contract). Type choices:
//! - enums are `Utf8` holding their `as_str()` names, so SQL compares against the same words as JSON;
//! - `response_flags` is `List<Utf8>` (empty list when there were none, never null);
//! - times are `Timestamp(Microsecond, "UTC")`: Parquet and DuckDB read them natively, and micros cover
//!   every date chrono produces from access logs;
//! - span `attributes` are one JSON object per row (`Utf8`), queryable with string functions and
//!   decodable without a schema change when new attribute keys appear.

use crate::error::{Result, StoreError, arrow_err};
use arrow::array::{
    ArrayRef, Float64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use meshlens_model::record::RequestRecord;
use meshlens_model::span::SpanRecord;
use std::sync::{Arc, LazyLock};

/// Time zone of every timestamp column.
pub const TIME_ZONE: &str = "UTC";

/// The tables the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per `RequestRecord`.
    Requests,
    /// One row per `SpanRecord`.
    Spans,
}

impl Table {
    /// Every table, in a fixed order (also the order of per-table arrays inside the store).
    pub const ALL: [Table; 2] = [Table::Requests, Table::Spans];

    /// SQL table name; also the Parquet directory name and the catalog's `table_name`.
    pub fn name(self) -> &'static str {
        match self {
            Table::Requests => "requests",
            Table::Spans => "spans",
        }
    }

    /// The column that partitions files by hour and prunes them by time range.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Requests => "timestamp",
            Table::Spans => "start_time",
        }
    }

    /// The column each Parquet file is ordered by before time, if any: rows with the same value sit
    /// together, so page statistics let a scan skip the others. `direction` for requests, because nearly
    /// every analysis reads one side only (outbound or inbound), and that halves what it decodes.
    pub fn cluster_column(self) -> Option<&'static str> {
        match self {
            Table::Requests => Some("direction"),
            Table::Spans => None,
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Requests => Arc::clone(&REQUESTS_SCHEMA),
            Table::Spans => Arc::clone(&SPANS_SCHEMA),
        }
    }

    /// The schema SQL sees: [`Table::schema`] with every string column as `Utf8View`. Parquet pages decode
    /// straight into views of their (mostly dictionary) values instead of one copy per row, and joins,
    /// group-bys and sorts move and compare 16-byte views rather than the strings. Files keep `Utf8`, so
    /// DuckDB and other Parquet readers see plain strings.
    pub fn query_schema(self) -> SchemaRef {
        match self {
            Table::Requests => Arc::clone(&REQUESTS_QUERY_SCHEMA),
            Table::Spans => Arc::clone(&SPANS_QUERY_SCHEMA),
        }
    }

    /// Looks a table up by its SQL name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Index into per-table arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// One-byte tag of the table in WAL records. Values are persisted: never renumber.
    pub(crate) fn wal_tag(self) -> u8 {
        match self {
            Table::Requests => 1,
            Table::Spans => 2,
        }
    }

    pub(crate) fn from_wal_tag(tag: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.wal_tag() == tag)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into()))
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn required_utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// Field of the `response_flags` list items; nullable like Arrow's default list field, so that Parquet
/// files read back (by DataFusion or DuckDB) with the same type.
fn flags_item_field() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::Utf8, true))
}

static REQUESTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("duration_ms", DataType::UInt64, true),
        Field::new("upstream_service_time_ms", DataType::UInt64, true),
        utf8("method"),
        utf8("path"),
        utf8("protocol"),
        utf8("authority"),
        Field::new("status", DataType::UInt16, true),
        Field::new("response_flags", DataType::List(flags_item_field()), false),
        utf8("response_code_details"),
        Field::new("bytes_received", DataType::UInt64, true),
        Field::new("bytes_sent", DataType::UInt64, true),
        utf8("request_id"),
        utf8("trace_id"),
        utf8("span_id"),
        utf8("user_agent"),
        utf8("x_forwarded_for"),
        required_utf8("reporter"),
        required_utf8("direction"),
        utf8("upstream_cluster"),
        utf8("upstream_host"),
        utf8("downstream_local_address"),
        utf8("downstream_remote_address"),
        utf8("requested_server_name"),
        utf8("route_name"),
        utf8("destination_service"),
        Field::new("destination_port", DataType::UInt16, true),
        utf8("destination_subset"),
        utf8("destination_namespace"),
        utf8("destination_workload"),
        utf8("destination_principal"),
        utf8("source_workload"),
        utf8("source_namespace"),
        utf8("source_principal"),
        required_utf8("mtls"),
        utf8("tls_version"),
        Field::new("attempts", DataType::UInt32, true),
        required_utf8("source_format"),
    ]))
});

static REQUESTS_QUERY_SCHEMA: LazyLock<SchemaRef> =
    LazyLock::new(|| retyped(&REQUESTS_SCHEMA, &DataType::Utf8, &DataType::Utf8View));
static SPANS_QUERY_SCHEMA: LazyLock<SchemaRef> =
    LazyLock::new(|| retyped(&SPANS_SCHEMA, &DataType::Utf8, &DataType::Utf8View));

/// `schema` with every (top-level) `from` column typed `to`.
fn retyped(schema: &Schema, from: &DataType, to: &DataType) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if field.data_type() == from {
                field.as_ref().clone().with_data_type(to.clone())
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` cast column by column to `schema` (the same columns, retyped).
fn cast_batch(batch: &RecordBatch, schema: SchemaRef, context: &str) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err(context))?;
    RecordBatch::try_new(schema, columns).map_err(arrow_err(context))
}

/// `batch` (with `table`'s storage schema) as [`Table::query_schema`] has it: string columns become views
/// of the same buffers, nothing is copied.
pub fn to_query_batch(table: Table, batch: &RecordBatch) -> Result<RecordBatch> {
    cast_batch(batch, table.query_schema(), "viewing a batch's strings")
}

/// `schema` with `Utf8View` columns as `Utf8`: what answers to users show, whatever the engine used inside.
pub fn plain_string_schema(schema: &Schema) -> SchemaRef {
    retyped(schema, &DataType::Utf8View, &DataType::Utf8)
}

/// `batch` cast to [`plain_string_schema`].
pub fn with_plain_strings(batch: &RecordBatch) -> Result<RecordBatch> {
    cast_batch(batch, plain_string_schema(&batch.schema()), "turning string views into strings")
}

static SPANS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        required_utf8("trace_id"),
        required_utf8("span_id"),
        utf8("parent_span_id"),
        required_utf8("name"),
        required_utf8("kind"),
        Field::new("start_time", timestamp_type(), false),
        Field::new("end_time", timestamp_type(), false),
        Field::new("duration_ms", DataType::Float64, false),
        required_utf8("status_code"),
        utf8("status_message"),
        utf8("service_name"),
        utf8("service_namespace"),
        utf8("http_method"),
        Field::new("http_status_code", DataType::UInt16, true),
        utf8("http_url"),
        utf8("http_route"),
        utf8("peer_service"),
        utf8("upstream_cluster"),
        utf8("request_id"),
        required_utf8("attributes"),
    ]))
});

fn opt_str<'a, T: 'a>(records: &'a [T], get: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(records.iter().map(get).collect::<StringArray>())
}

fn req_str<'a, T: 'a>(records: &'a [T], get: impl Fn(&'a T) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(records.iter().map(get)))
}

fn timestamps<T>(records: &[T], get: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(records.iter().map(get)).with_timezone(TIME_ZONE))
}

/// Builds a `requests` batch. The batch has exactly [`Table::Requests`]' schema.
pub fn requests_to_batch(records: &[RequestRecord]) -> Result<RecordBatch> {
    let mut flags =
        ListBuilder::with_capacity(StringBuilder::with_capacity(records.len(), records.len() * 2), records.len())
            .with_field(flags_item_field());
    for r in records {
        for flag in &r.response_flags {
            flags.values().append_value(flag);
        }
        flags.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        timestamps(records, |r| r.timestamp.timestamp_micros()),
        Arc::new(records.iter().map(|r| r.duration_ms).collect::<UInt64Array>()),
        Arc::new(records.iter().map(|r| r.upstream_service_time_ms).collect::<UInt64Array>()),
        opt_str(records, |r| r.method.as_deref()),
        opt_str(records, |r| r.path.as_deref()),
        opt_str(records, |r| r.protocol.as_deref()),
        opt_str(records, |r| r.authority.as_deref()),
        Arc::new(records.iter().map(|r| r.status).collect::<UInt16Array>()),
        Arc::new(flags.finish()),
        opt_str(records, |r| r.response_code_details.as_deref()),
        Arc::new(records.iter().map(|r| r.bytes_received).collect::<UInt64Array>()),
        Arc::new(records.iter().map(|r| r.bytes_sent).collect::<UInt64Array>()),
        opt_str(records, |r| r.request_id.as_deref()),
        opt_str(records, |r| r.trace_id.as_deref()),
        opt_str(records, |r| r.span_id.as_deref()),
        opt_str(records, |r| r.user_agent.as_deref()),
        opt_str(records, |r| r.x_forwarded_for.as_deref()),
        req_str(records, |r| r.reporter.as_str()),
        req_str(records, |r| r.direction.as_str()),
        opt_str(records, |r| r.upstream_cluster.as_deref()),
        opt_str(records, |r| r.upstream_host.as_deref()),
        opt_str(records, |r| r.downstream_local_address.as_deref()),
        opt_str(records, |r| r.downstream_remote_address.as_deref()),
        opt_str(records, |r| r.requested_server_name.as_deref()),
        opt_str(records, |r| r.route_name.as_deref()),
        opt_str(records, |r| r.destination_service.as_deref()),
        Arc::new(records.iter().map(|r| r.destination_port).collect::<UInt16Array>()),
        opt_str(records, |r| r.destination_subset.as_deref()),
        opt_str(records, |r| r.destination_namespace.as_deref()),
        opt_str(records, |r| r.destination_workload.as_deref()),
        opt_str(records, |r| r.destination_principal.as_deref()),
        opt_str(records, |r| r.source_workload.as_deref()),
        opt_str(records, |r| r.source_namespace.as_deref()),
        opt_str(records, |r| r.source_principal.as_deref()),
        req_str(records, |r| r.mtls.as_str()),
        opt_str(records, |r| r.tls_version.as_deref()),
        Arc::new(records.iter().map(|r| r.attempts).collect::<UInt32Array>()),
        req_str(records, |r| r.source_format.as_str()),
    ];
    RecordBatch::try_new(Table::Requests.schema(), columns).map_err(arrow_err("building a requests batch"))
}

/// Builds a `spans` batch. The batch has exactly [`Table::Spans`]' schema.
pub fn spans_to_batch(records: &[SpanRecord]) -> Result<RecordBatch> {
    let mut attributes = StringBuilder::with_capacity(records.len(), records.len() * 64);
    for r in records {
        // A map of strings always serializes; the error arm is kept typed rather than unwrapped.
        let json = serde_json::to_string(&r.attributes).map_err(|e| StoreError::Arrow {
            context: format!("encoding attributes of span {}", r.span_id),
            cause: arrow::error::ArrowError::ExternalError(Box::new(e)),
        })?;
        attributes.append_value(json);
    }
    let columns: Vec<ArrayRef> = vec![
        req_str(records, |r| r.trace_id.as_str()),
        req_str(records, |r| r.span_id.as_str()),
        opt_str(records, |r| r.parent_span_id.as_deref()),
        req_str(records, |r| r.name.as_str()),
        req_str(records, |r| r.kind.as_str()),
        timestamps(records, |r| r.start_time.timestamp_micros()),
        timestamps(records, |r| r.end_time.timestamp_micros()),
        Arc::new(Float64Array::from_iter_values(records.iter().map(|r| r.duration_ms))),
        req_str(records, |r| r.status_code.as_str()),
        opt_str(records, |r| r.status_message.as_deref()),
        opt_str(records, |r| r.service_name.as_deref()),
        opt_str(records, |r| r.service_namespace.as_deref()),
        opt_str(records, |r| r.http_method.as_deref()),
        Arc::new(records.iter().map(|r| r.http_status_code).collect::<UInt16Array>()),
        opt_str(records, |r| r.http_url.as_deref()),
        opt_str(records, |r| r.http_route.as_deref()),
        opt_str(records, |r| r.peer_service.as_deref()),
        opt_str(records, |r| r.upstream_cluster.as_deref()),
        opt_str(records, |r| r.request_id.as_deref()),
        Arc::new(attributes.finish()),
    ];
    RecordBatch::try_new(Table::Spans.schema(), columns).map_err(arrow_err("building a spans batch"))
}

/// Checks that `batch` can be stored in `table` as is: same field names, types and nullability.
pub(crate) fn check_batch(table: Table, batch: &RecordBatch) -> Result<()> {
    let expected = table.schema();
    let actual = batch.schema();
    if actual.fields().len() != expected.fields().len() {
        return Err(StoreError::SchemaMismatch {
            table: table.name(),
            detail: format!("{} columns, expected {}", actual.fields().len(), expected.fields().len()),
        });
    }
    for (a, e) in actual.fields().iter().zip(expected.fields()) {
        if a.name() != e.name() || a.data_type() != e.data_type() || (a.is_nullable() && !e.is_nullable()) {
            return Err(StoreError::SchemaMismatch {
                table: table.name(),
                detail: format!(
                    "column {} {:?} (nullable {}), expected {} {:?}",
                    a.name(),
                    a.data_type(),
                    a.is_nullable(),
                    e.name(),
                    e.data_type()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use chrono::TimeZone;
    use meshlens_model::record::{Mtls, Reporter};
    use meshlens_model::span::SpanKind;

    #[test]
    fn sql_sees_string_views_of_the_stored_strings_and_answers_turn_them_back() {
        for table in Table::ALL {
            let (stored, viewed) = (table.schema(), table.query_schema());
            for (s, v) in stored.fields().iter().zip(viewed.fields()) {
                let expected =
                    if s.data_type() == &DataType::Utf8 { DataType::Utf8View } else { s.data_type().clone() };
                assert_eq!((v.name(), v.data_type(), v.is_nullable()), (s.name(), &expected, s.is_nullable()));
            }
            assert_eq!(plain_string_schema(&viewed), stored, "{table}");
        }
        let record = RequestRecord { path: Some("/api".into()), ..Default::default() };
        let batch = requests_to_batch(&[record]).unwrap();
        let viewed = to_query_batch(Table::Requests, &batch).unwrap();
        assert_eq!(viewed.schema(), Table::Requests.query_schema());
        assert_eq!(viewed.column_by_name("path").unwrap().as_string_view().value(0), "/api");
        assert_eq!(with_plain_strings(&viewed).unwrap(), batch);
    }

    #[test]
    fn request_columns_follow_the_model_and_keep_values() {
        let record = RequestRecord {
            timestamp: chrono::Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
            duration_ms: Some(12),
            status: Some(503),
            response_flags: vec!["UO".into(), "URX".into()],
            reporter: Reporter::Source,
            mtls: Mtls::Mutual,
            ..Default::default()
        };
        let batch = requests_to_batch(&[record.clone(), RequestRecord::default()]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let json = serde_json::to_value(&record).unwrap();
        let names: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        for field in batch.schema().fields() {
            assert!(names.contains(&field.name().as_str()), "column {} is not a RequestRecord field", field.name());
        }
        assert_eq!(batch.num_columns(), names.len(), "every RequestRecord field is a column");
        let flags = batch.column_by_name("response_flags").unwrap().as_list::<i32>();
        assert_eq!(flags.value(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(), ["UO", "URX"]);
        assert_eq!(flags.value(1).len(), 0);
        assert_eq!(batch.column_by_name("reporter").unwrap().as_string::<i32>().value(0), "source");
        assert!(batch.column_by_name("method").unwrap().is_null(0));
    }

    #[test]
    fn span_columns_follow_the_model_and_attributes_are_json() {
        let span = SpanRecord {
            trace_id: "a".repeat(32),
            span_id: "b".repeat(16),
            kind: SpanKind::Server,
            attributes: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let batch = spans_to_batch(std::slice::from_ref(&span)).unwrap();
        let json = serde_json::to_value(&span).unwrap();
        assert_eq!(batch.num_columns(), json.as_object().unwrap().len());
        assert_eq!(batch.column_by_name("attributes").unwrap().as_string::<i32>().value(0), r#"{"k":"v"}"#);
        assert_eq!(batch.column_by_name("kind").unwrap().as_string::<i32>().value(0), "server");
        check_batch(Table::Spans, &batch).unwrap();
        assert!(check_batch(Table::Requests, &batch).is_err());
    }
}
