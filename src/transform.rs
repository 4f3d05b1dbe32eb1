//! The pipeline SQL: planned once at start-up, then run on every batch.
//!
//! The logical plan is built and optimised once against the record schema,
//! so a SQL error stops the start before anything is consumed. Each batch
//! then only swaps the scanned table for the batch itself and runs the
//! physical planner, which is cheap next to the work on 1k+ rows.

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
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
    plan: LogicalPlan,
    table: String,
    input_schema: SchemaRef,
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
        Ok(Self {
            state,
            plan,
            table: table.to_owned(),
            input_schema,
            output_schema,
        })
    }

    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// Runs the planned SQL on one decoded batch.
    pub async fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, TransformError> {
        let expected = batch.num_rows();
        let table = MemTable::try_new(self.input_schema.clone(), vec![vec![batch]])
            .map_err(TransformError::Execute)?;
        let source = provider_as_source(Arc::new(table));
        let plan = self
            .plan
            .clone()
            .transform_up(|node| match node {
                LogicalPlan::TableScan(mut scan) if scan.table_name.table() == self.table => {
                    scan.source = source.clone();
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                other => Ok(Transformed::no(other)),
            })
            .map_err(TransformError::Execute)?
            .data;
        let physical = DefaultPhysicalPlanner::default()
            .create_physical_plan(&plan, &self.state)
            .await
            .map_err(TransformError::Execute)?;
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
