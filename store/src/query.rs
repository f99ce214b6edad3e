//! SQL over the store with DataFusion.
//!
//! Each table is a [`StoreTable`]: at planning time it reads the time-column bounds out of the pushed-down
//! filters, asks the catalog only for files overlapping them (older files are never opened, not even their
//! footers), and plans a Parquet scan over those files with projection and predicate push-down (row
//! groups and pages are pruned by their statistics) unioned with the rows still in memory. Filters are
//! reported `Inexact`, so DataFusion re-applies them above the union and results are exact. Strings are
//! `Utf8View` to SQL ([`Table::query_schema`]): the Parquet reader decodes into views directly and the
//! in-memory rows are viewed, not copied.

use crate::schema::{Table, to_query_batch};
use crate::store::Shared;
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::{DFSchema, ScalarValue, project_schema};
use datafusion::datasource::TableProvider;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr::{Between, BinaryExpr, Cast, TryCast};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::object_store::ObjectMeta;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Options that let through queries only: DDL (`CREATE`, `DROP`), DML (`INSERT`, `COPY ... TO`) and
/// statements (`SET`, transactions) are rejected at planning.
pub fn read_only_sql_options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// DataFusion table over one store table: catalog-pruned Parquet files plus in-memory rows.
#[derive(Debug)]
pub(crate) struct StoreTable {
    pub table: Table,
    pub shared: Arc<Shared>,
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.table.query_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.table.query_schema();
        let (from, to) = time_bounds(filters, self.table.time_column());
        let (files, memory) = self
            .shared
            .scan_snapshot(self.table, from, to)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.shared.stats.parquet_files_scanned.fetch_add(files.len() as u64, Ordering::Relaxed);
        tracing::debug!(table = %self.table, ?from, ?to, files = files.len(), memory_batches = memory.len(), "planning scan");

        let partitions = state.config().target_partitions().max(1);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            // The session's Parquet settings (`datafusion.execution.parquet.*`: filter push-down into the
            // decoder, page index, ...) apply, so `SET` in a session can try them.
            let options = TableParquetOptions {
                global: state.config_options().execution.parquet.clone(),
                ..TableParquetOptions::default()
            };
            let mut source = ParquetSource::new(Arc::clone(&schema)).with_table_parquet_options(options);
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions.min(files.len())];
            let group_count = groups.len();
            for (i, file) in files.iter().enumerate() {
                let path = self.shared.data_dir.join(&file.path);
                let location = datafusion::object_store::path::Path::from_absolute_path(&path)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let meta = ObjectMeta {
                    location,
                    last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                    size: file.size_bytes as u64,
                    e_tag: None,
                    version: None,
                };
                groups[i % group_count].push(PartitionedFile::new_from_meta(meta));
            }
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !memory.is_empty() {
            let count = partitions.min(memory.len());
            let mut parts = vec![Vec::new(); count];
            for (i, batch) in memory.iter().enumerate() {
                parts[i % count]
                    .push(to_query_batch(self.table, batch).map_err(|e| DataFusionError::External(Box::new(e)))?);
            }
            inputs.push(MemorySourceConfig::try_new_exec(&parts, Arc::clone(&schema), projection.cloned())?);
        }
        if inputs.is_empty() {
            return Ok(Arc::new(EmptyExec::new(project_schema(&schema, projection)?)));
        }
        UnionExec::try_new(inputs)
    }
}

/// Inclusive bounds (microseconds) on `column` implied by the conjunction of `filters`; `None` where a
/// side is unbounded. Only comparisons of the column (or a timestamp cast of it) with a timestamp literal
/// are understood; anything else leaves the bounds wider, never narrower, so pruning stays safe.
pub(crate) fn time_bounds(filters: &[Expr], column: &str) -> (Option<i64>, Option<i64>) {
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    for filter in filters {
        for expr in split_conjunction(filter) {
            match expr {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    let (op, literal) = if is_column(left, column) {
                        (*op, right)
                    } else if is_column(right, column) {
                        match op.swap() {
                            Some(op) => (op, left),
                            None => continue,
                        }
                    } else {
                        continue;
                    };
                    let Some((floor, ceil)) = literal_micros(literal) else { continue };
                    match op {
                        Operator::Gt | Operator::GtEq => lows.push(floor),
                        Operator::Lt | Operator::LtEq => highs.push(ceil),
                        Operator::Eq => {
                            lows.push(floor);
                            highs.push(ceil);
                        }
                        _ => {}
                    }
                }
                Expr::Between(Between { expr, negated: false, low, high }) if is_column(expr, column) => {
                    if let Some((floor, _)) = literal_micros(low) {
                        lows.push(floor);
                    }
                    if let Some((_, ceil)) = literal_micros(high) {
                        highs.push(ceil);
                    }
                }
                _ => {}
            }
        }
    }
    (lows.into_iter().max(), highs.into_iter().min())
}

fn is_column(expr: &Expr, column: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == column,
        // Casting between timestamp units or zones keeps the order, so bounds still apply.
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
            matches!(field.data_type(), DataType::Timestamp(..)) && is_column(expr, column)
        }
        _ => false,
    }
}

/// A timestamp literal as (floor, ceil) microseconds.
fn literal_micros(expr: &Expr) -> Option<(i64, i64)> {
    let Expr::Literal(value, _) = expr else { return None };
    let exact = |v: i64| Some((v, v));
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => exact(v.checked_mul(1_000_000)?),
        ScalarValue::TimestampMillisecond(Some(v), _) => exact(v.checked_mul(1_000)?),
        ScalarValue::TimestampMicrosecond(Some(v), _) => exact(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some((v.div_euclid(1_000), (v + 999).div_euclid(1_000))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(Some(v), Some("UTC".into())))
    }

    #[test]
    fn bounds_come_from_comparisons_between_and_flipped_operands() {
        let filters = [col("timestamp").gt_eq(ts(100)).and(col("timestamp").lt(ts(500))), ts(450).gt(col("timestamp"))];
        assert_eq!(time_bounds(&filters, "timestamp"), (Some(100), Some(450)));
        let between = [col("start_time").between(ts(10), ts(20))];
        assert_eq!(time_bounds(&between, "start_time"), (Some(10), Some(20)));
        let nanos = [col("timestamp").gt(lit(ScalarValue::TimestampNanosecond(Some(1_500), None)))];
        assert_eq!(time_bounds(&nanos, "timestamp"), (Some(1), None));
    }

    #[test]
    fn other_predicates_leave_bounds_open() {
        let filters = [
            col("timestamp").gt(ts(5)).or(col("status").eq(lit(500u16))),
            col("duration_ms").gt(lit(5u64)),
            col("timestamp").not_eq(ts(9)),
        ];
        assert_eq!(time_bounds(&filters, "timestamp"), (None, None));
    }
}
