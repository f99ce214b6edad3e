//! Yield points after joins, so that a cancelled query stops.
//!
//! DataFusion checks for cancellation only where a task yields to tokio, and its operators yield where they
//! read a source or cross an exchange (`datafusion::physical_plan::coop`). A join can turn one input batch
//! into millions of output rows (`FROM requests a, requests b, requests c`) without reading anything again,
//! so its task runs on without yielding, and a query past its time limit would keep a query thread busy
//! after the client got its 422. [`YieldAfterJoins`] wraps every operator with more than one input in a
//! [`CooperativeExec`], which spends a unit of the task's tokio budget per batch it passes on: the task
//! yields every few hundred batches, and an aborted query ends there.

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use std::sync::Arc;

/// The physical optimizer rule; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct YieldAfterJoins;

impl PhysicalOptimizerRule for YieldAfterJoins {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.children().len() > 1 {
                Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "yield_after_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
