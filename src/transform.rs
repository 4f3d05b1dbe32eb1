//! The pipeline SQL: planned once at start-up, then run on every batch.
//!
//! The plan is built, optimised and made physical once against the record
//! schema, so a SQL error stops the start before anything is consumed.
//! Each batch then only swaps the plan's in-memory source for the batch
//! itself (planning each batch afresh was about half the SQL's time in a
//! profile, bench/RESULTS.md).

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("pipeline SQL does not plan: {0}")]
    Plan(#[source] DataFusionError),
    #[error(
        "pipeline SQL must keep one row per input row, in order (every event gets a score), \
         but it uses {0}; derive features with expressions in the SELECT list instead"
    )]
    NotRowWise(String),
    #[error("pipeline SQL failed on a batch: {0}")]
    Execute(#[source] DataFusionError),
    #[error("pipeline SQL returned {got} rows for {expected} input rows")]
    RowCount { expected: usize, got: usize },
}

pub struct SqlTransform {
    state: SessionState,
    /// The physical plan over an empty in-memory table of the input
    /// schema, whose source each batch replaces.
    physical: Arc<dyn ExecutionPlan>,
    output_schema: SchemaRef,
}

impl SqlTransform {
    /// Plans `sql` against a table named `table` with `input_schema`.
    pub async fn plan(
        sql: &str,
        table: &str,
        input_schema: SchemaRef,
    ) -> Result<Self, TransformError> {
        // One partition keeps rows in input order, and a pipeline already
        // gets its parallelism from Kafka partitions and instances.
        let config = SessionConfig::new().with_target_partitions(1);
        let ctx = SessionContext::new_with_config(config);
        let empty =
            MemTable::try_new(input_schema.clone(), vec![vec![]]).map_err(TransformError::Plan)?;
        ctx.register_table(table, Arc::new(empty))
            .map_err(TransformError::Plan)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let plan = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(TransformError::Plan)?
            .into_optimized_plan()
            .map_err(TransformError::Plan)?;
        ensure_row_wise(&plan)?;
        let output_schema = Arc::new(plan.schema().as_arrow().clone());
        let state = ctx.state();
        let physical = DefaultPhysicalPlanner::default()
            .create_physical_plan(&plan, &state)
            .await
            .map_err(TransformError::Plan)?;
        Ok(Self {
            state,
            physical,
            output_schema,
        })
    }

    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// Runs the planned SQL on one decoded batch.
    pub async fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, TransformError> {
        let expected = batch.num_rows();
        let physical = Arc::clone(&self.physical)
            .transform_up(|node| {
                let Some(memory) = node
                    .downcast_ref::<DataSourceExec>()
                    .and_then(|exec| exec.data_source().downcast_ref::<MemorySourceConfig>())
                else {
                    return Ok(Transformed::no(node));
                };
                // As `MemTable` checked when each batch was planned anew: a
                // batch of another schema would be read by the wrong columns.
                if !memory.original_schema().contains(&batch.schema()) {
                    return datafusion::common::plan_err!(
                        "the batch's schema is not the one the SQL was planned for"
                    );
                }
                let source: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
                    &[vec![batch.clone()]],
                    memory.original_schema(),
                    memory.projection().clone(),
                )?;
                Ok(Transformed::yes(source))
            })
            .map_err(TransformError::Execute)?
            .data;
        let batches = collect(physical, self.state.task_ctx())
            .await
            .map_err(TransformError::Execute)?;
        let output = concat_batches(&self.output_schema, &batches)
            .map_err(|e| TransformError::Execute(e.into()))?;
        if output.num_rows() != expected {
            return Err(TransformError::RowCount {
                expected,
                got: output.num_rows(),
            });
        }
        Ok(output)
    }
}

/// Refuses plans that drop, add or reorder rows.
fn ensure_row_wise(plan: &LogicalPlan) -> Result<(), TransformError> {
    let mut offending = None;
    plan.apply(|node| {
        let allowed = match node {
            LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => true,
            LogicalPlan::TableScan(scan) => scan.filters.is_empty() && scan.fetch.is_none(),
            _ => false,
        };
        if allowed {
            return Ok(TreeNodeRecursion::Continue);
        }
        offending = Some(node.display().to_string());
        Ok(TreeNodeRecursion::Stop)
    })
    .map_err(TransformError::Plan)?;
    match offending {
        Some(node) => Err(TransformError::NotRowWise(node)),
        None => Ok(()),
    }
}
