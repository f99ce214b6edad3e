//! Namespace scope inside SQL. A scoped caller's session registers `requests` and `spans` as
//! [`ScopedTable`]s: the store's table with the caller's namespace filter applied inside the scan, so no name
//! reaches the unfiltered rows.
//!
//! The filter sits below a [`NamespaceScopeExec`], a pass-through node that accepts no filter pushdown.
//! Without it the optimizers could merge the caller's own predicates into the same filter as the namespace
//! condition and evaluate them on other namespaces' rows, where an error (`1/0` on a chosen row) would
//! reveal that such a row exists. Only conditions on the time column go below the filter, and only to
//! prune files and row groups by their statistics; they are applied to rows again above the filter.

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::utils::disjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::prelude::{col, lit};
use meshlens_store::Table;
use std::fmt;
use std::sync::Arc;

/// The columns that say which namespaces a row belongs to: a row is in scope when any of them equals the
/// caller's namespace. Spans know only the namespace of the service that emitted them.
pub(crate) fn scope_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Requests => &["source_namespace", "destination_namespace"],
        Table::Spans => &["service_namespace"],
    }
}

/// A store table seen through one namespace.
#[derive(Debug)]
pub(super) struct ScopedTable {
    table: Table,
    inner: Arc<dyn TableProvider>,
    namespace: String,
}

impl ScopedTable {
    pub(super) fn new(table: Table, inner: Arc<dyn TableProvider>, namespace: &str) -> Self {
        ScopedTable { table, inner, namespace: namespace.to_owned() }
    }

    /// Whether `filter` reads the time column and nothing else: the only filters allowed below the
    /// namespace condition (see the module docs).
    fn prunes_by_time(&self, filter: &Expr) -> bool {
        let columns = filter.column_refs();
        !columns.is_empty() && columns.iter().all(|c| c.name == self.table.time_column())
    }
}

#[async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.prunes_by_time(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        // The scope columns are read even when the query does not select them, then projected away.
        let (inner_projection, output_projection) = match projection {
            None => (None, None),
            Some(wanted) => {
                let mut read = wanted.clone();
                for name in scope_columns(self.table) {
                    let index = schema.index_of(name)?;
                    if !read.contains(&index) {
                        read.push(index);
                    }
                }
                (Some(read), Some((0..wanted.len()).collect::<Vec<_>>()))
            }
        };
        let pruning: Vec<Expr> = filters.iter().filter(|f| self.prunes_by_time(f)).cloned().collect();
        // No limit below the filter: the first rows read may all belong to other namespaces.
        let input = self.inner.scan(state, inner_projection.as_ref(), &pruning, None).await?;
        let condition = disjunction(scope_columns(self.table).iter().map(|c| col(*c).eq(lit(self.namespace.as_str()))))
            .unwrap_or_else(|| lit(false));
        let predicate: Arc<dyn PhysicalExpr> =
            state.create_physical_expr(condition, &DFSchema::try_from(input.schema())?)?;
        let filter = FilterExecBuilder::new(predicate, input).apply_projection(output_projection)?.build()?;
        Ok(Arc::new(NamespaceScopeExec { input: Arc::new(filter), namespace: self.namespace.clone() }))
    }
}

/// Passes its input through unchanged and lets no filter, projection or limit move below it.
#[derive(Debug)]
struct NamespaceScopeExec {
    input: Arc<dyn ExecutionPlan>,
    namespace: String,
}

impl DisplayAs for NamespaceScopeExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "NamespaceScopeExec: namespace={}", self.namespace)
    }
}

impl ExecutionPlan for NamespaceScopeExec {
    fn name(&self) -> &str {
        "NamespaceScopeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!("NamespaceScopeExec takes one input, got {}", children.len());
        }
        Ok(Arc::new(NamespaceScopeExec { input: children.swap_remove(0), namespace: self.namespace.clone() }))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(datafusion::physical_plan::ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
