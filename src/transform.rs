//! The pipeline SQL: planned once at start-up, then run on every batch.
//!
//! The plan is built, optimised and made physical once against the record
//! schema, so a SQL error stops the start before anything is consumed.
//! A row-wise plan is projections over the table's columns, so each batch
//! is run through the projections' expressions directly, as DataFusion's
//! projection operator would run them. Planning each batch afresh was about
//! half the SQL's time in a profile, and swapping the batch into the
//! planned operators (which rebuilt them) half of what was left
//! (bench/RESULTS.md, sessions 5 and 12); a plan of any other shape still
//! runs through DataFusion's executor with the batch swapped in.

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::projection::Projector;
use datafusion::physical_plan::projection::ProjectionExec;
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
    /// The plan as projections of the batch, when it is only that.
    projections: Option<Projections>,
    /// What the SQL was planned against, and what it gives.
    input_schema: SchemaRef,
    output_schema: SchemaRef,
}

/// A plan of projections over an in-memory source, run without the
/// executor: the source's choice of columns, then each projection's
/// expressions, innermost first.
struct Projections {
    columns: Option<Vec<usize>>,
    innermost_first: Vec<Projector>,
}

impl Projections {
    /// `physical` as projections, if it is only projections over the
    /// in-memory source (what a row-wise plan becomes).
    fn of(physical: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let mut outermost_first = Vec::new();
        let mut node = physical;
        loop {
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let projector = projection
                    .projection_expr()
                    .make_projector_with_schema_metadata(
                        &projection.input().schema(),
                        &projection.schema(),
                    )
                    .ok()?;
                outermost_first.push(projector);
                node = projection.input();
                continue;
            }
            let memory = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|exec| exec.data_source().downcast_ref::<MemorySourceConfig>())?;
            outermost_first.reverse();
            return Some(Self {
                columns: memory.projection().clone(),
                innermost_first: outermost_first,
            });
        }
    }

    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let mut projected = match &self.columns {
            Some(columns) => batch.project(columns)?,
            None => batch.clone(),
        };
        for projector in &self.innermost_first {
            projected = projector.project_batch(&projected)?;
        }
        Ok(projected)
    }
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
            projections: Projections::of(&physical),
            physical,
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
        // As `MemTable` checked when each batch was planned anew: a batch
        // of another schema would be read by the wrong columns.
        if !self.input_schema.contains(&batch.schema()) {
            return Err(TransformError::Execute(DataFusionError::Plan(
                "the batch's schema is not the one the SQL was planned for".into(),
            )));
        }
        let output = match &self.projections {
            Some(projections) => {
                let projected = projections.apply(&batch).map_err(TransformError::Execute)?;
                // Under the planned schema, as the executor's output is.
                RecordBatch::try_new_with_options(
                    Arc::clone(&self.output_schema),
                    projected.columns().to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(projected.num_rows())),
                )
                .map_err(|e| TransformError::Execute(e.into()))?
            }
            None => self.execute(batch).await?,
        };
        if output.num_rows() != expected {
            return Err(TransformError::RowCount {
                expected,
                got: output.num_rows(),
            });
        }
        Ok(output)
    }

    /// Runs the planned operators with the batch as their source.
    async fn execute(&self, batch: RecordBatch) -> Result<RecordBatch, TransformError> {
        let physical = Arc::clone(&self.physical)
            .transform_up(|node| {
                let Some(memory) = node
                    .downcast_ref::<DataSourceExec>()
                    .and_then(|exec| exec.data_source().downcast_ref::<MemorySourceConfig>())
                else {
                    return Ok(Transformed::no(node));
                };
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
        concat_batches(&self.output_schema, &batches).map_err(|e| TransformError::Execute(e.into()))
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

#[cfg(test)]
mod tests {
    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, StringArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn transactions() -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("event_id", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
            (
                "amount",
                Arc::new(Float64Array::from(vec![Some(10.0), None, Some(300.0)])),
            ),
            (
                "event_time",
                Arc::new(TimestampMillisecondArray::from(vec![
                    1_775_000_000_000,
                    1_775_020_000_000,
                    1_775_500_000_000,
                ])),
            ),
            (
                "is_online",
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            ),
            (
                "card_mean_amount_30d",
                Arc::new(Float64Array::from(vec![Some(0.0), Some(5.0), None])),
            ),
        ];
        RecordBatch::try_from_iter(columns).expect("a batch")
    }

    /// The example's kinds of expression (functions, CASE, casts,
    /// COALESCE over NULLIF, a nested SELECT), run on the projections
    /// directly and through DataFusion's executor: the same batch.
    #[tokio::test]
    async fn projections_run_directly_give_what_the_executor_gives() {
        let batch = transactions();
        let sql = "SELECT event_id, ratio * 2.0 AS doubled, night FROM (
            SELECT event_id,
                ln(amount + 1.0) AS log_amount,
                CASE WHEN amount > 220.0 THEN 1.0 ELSE 0.0 END AS high,
                CAST(date_part('hour', event_time) AS DOUBLE) AS hour_of_day,
                CASE WHEN date_part('hour', event_time) < 6 THEN 1.0 ELSE 0.0 END AS night,
                CASE WHEN is_online THEN 1.0 ELSE 0.0 END AS online,
                COALESCE(amount / NULLIF(card_mean_amount_30d, 0.0), 1.0) AS ratio
            FROM transactions)";
        for sql in [
            sql,
            "SELECT * FROM transactions",
            "SELECT amount FROM transactions",
        ] {
            let transform = SqlTransform::plan(sql, "transactions", batch.schema())
                .await
                .expect("the SQL plans");
            assert!(
                transform.projections.is_some(),
                "`{sql}` runs as projections"
            );
            let direct = transform.apply(batch.clone()).await.expect("runs directly");
            let executed = transform
                .execute(batch.clone())
                .await
                .expect("runs executed");
            assert_eq!(direct, executed, "`{sql}`");
            assert_eq!(direct.num_rows(), 3);
        }
    }

    #[tokio::test]
    async fn a_batch_of_another_schema_is_refused() {
        let planned = Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Utf8, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let transform =
            SqlTransform::plan("SELECT amount FROM transactions", "transactions", planned)
                .await
                .expect("the SQL plans");
        let refused = transform.apply(transactions()).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("not the one the SQL was planned for"),
            "{refused}"
        );
    }
}
