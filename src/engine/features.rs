//! The one feature path (ARCHITECTURE.md §1): decoded rows and window state
//! in, the model's inputs out, through the window features and the
//! pipeline's SQL. The stream (`Engine::process`) and `train` both call
//! [`FeaturePath::compute`], so serving and training compute their features
//! by the same code, not by two copies kept equal by tests.

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::isolate::isolate;
use crate::config::{Pipeline, SqlFailureLimit};
use crate::error::{Chain, without_values};
use crate::schema::RecordSchema;
use crate::state::{Change, Checkpoint};
use crate::transform::{SqlTransform, TransformError};
use crate::windows::{WindowError, WindowOutput, Windows};

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Windows(#[from] WindowError),
    #[error(
        "the pipeline SQL failed on more than {tolerated} of a batch's {rows} rows, so the SQL \
         is wrong, not the data (transform.max_failed_share); fix it and restart, the batch \
         is not committed. The batch's error: {error}"
    )]
    SqlFailsOnMostRows {
        rows: usize,
        tolerated: usize,
        error: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Where a batch's window features come from.
pub enum WindowState<'a> {
    /// The stream: the live state as of the previous batch. Each row is
    /// folded in, unless it is marked in `already_folded` (read again below
    /// the checkpoint). `partitions[row]` is each row's input partition.
    Live {
        checkpoint: &'a Checkpoint,
        partitions: &'a [i32],
        already_folded: &'a [bool],
    },
    /// Training: history replayed from an empty state in event-time order,
    /// each row's label visible after its delay ([`Windows::history`]).
    History,
}

/// A batch's features and what computing them gave besides.
pub struct Features {
    /// The decoded columns followed by the window features: the table the
    /// SQL read (drift reads the decoded columns from it).
    pub table: RecordBatch,
    /// The SQL's output, one row per entry of `table_rows`; `None` when
    /// there is no row to score.
    pub features: Option<RecordBatch>,
    /// Per feature row, its row in `table`.
    pub table_rows: Vec<usize>,
    /// The table rows the SQL fails on alone, with the error (values left
    /// out); the stream dead-letters them.
    pub failed: Vec<(usize, String)>,
    /// The state changes that fold the batch in (none for history).
    pub changes: Vec<Change>,
    /// Events older than their key's retained history.
    pub late: u64,
}

/// The window features and the planned SQL of one pipeline.
pub struct FeaturePath {
    windows: Option<Arc<Windows>>,
    transform: SqlTransform,
    sql_failure_limit: SqlFailureLimit,
    /// The decoded columns plus the window features: the table the SQL reads.
    table_schema: SchemaRef,
}

impl FeaturePath {
    /// Plans the SQL against the decoded schema extended by `windows`.
    pub async fn plan(
        schema: &RecordSchema,
        sql: &str,
        windows: Option<Arc<Windows>>,
        sql_failure_limit: SqlFailureLimit,
    ) -> Result<Self, TransformError> {
        let table_schema = match &windows {
            Some(windows) => windows.extend_schema(&schema.arrow),
            None => schema.arrow.clone(),
        };
        let transform = SqlTransform::plan(sql, &schema.name, table_schema.clone()).await?;
        Ok(Self {
            windows,
            transform,
            sql_failure_limit,
            table_schema,
        })
    }

    /// The pipeline's feature path, with window features from a fresh
    /// [`Windows`] of its `[windows]` (training's: history needs no store).
    pub async fn for_pipeline(pipeline: &Pipeline) -> Result<Self, TransformError> {
        Self::plan(
            &pipeline.schema,
            &pipeline.sql,
            pipeline
                .windows
                .clone()
                .map(|spec| Arc::new(Windows::new(spec))),
            pipeline.sql_failure_limit,
        )
        .await
    }

    /// The SQL's output schema: the model's inputs.
    pub fn output_schema(&self) -> &SchemaRef {
        self.transform.output_schema()
    }

    /// Window features for the decoded rows, then the SQL over them. If the
    /// SQL fails on the batch (a cast of a bad value, say), the rows it
    /// fails on are found by bisection and set aside, so the rest is still
    /// computed; failures are rare, so the slow path costs nothing in the
    /// common case. Past `transform.max_failed_share` the SQL, not the data,
    /// is wrong, and that is an error.
    pub async fn compute(
        &self,
        decoded: RecordBatch,
        state: Option<WindowState<'_>>,
    ) -> Result<Features, FeatureError> {
        let (table, changes, late) = self.with_windows(decoded, state)?;
        let mut features = Features {
            features: None,
            table_rows: Vec::new(),
            failed: Vec::new(),
            changes,
            late,
            table,
        };
        if features.table.num_rows() == 0 {
            return Ok(features);
        }
        let table = &features.table;
        let batch_error = match self.transform.apply(table.clone()).await {
            Ok(output) => {
                features.table_rows = (0..table.num_rows()).collect();
                features.features = Some(output);
                return Ok(features);
            }
            Err(e) => without_values(&Chain(&e).to_string()),
        };
        let rows = table.num_rows();
        tracing::warn!(rows, error = %batch_error, "pipeline SQL failed on a batch; isolating the rows it fails on");
        let limit = self.sql_failure_limit;
        let tolerated = ((limit.max_share * rows as f64).floor() as usize)
            .max(limit.min_rows.saturating_sub(1));
        let isolated = isolate(rows, tolerated, |range| {
            self.transform.apply(table.slice(range.start, range.len()))
        })
        .await
        .map_err(|_| FeatureError::SqlFailsOnMostRows {
            rows,
            tolerated,
            error: batch_error.clone(),
        })?;
        features.failed = isolated
            .failed
            .into_iter()
            .map(|(row, error)| (row, without_values(&Chain(&error).to_string())))
            .collect();
        if isolated.kept.is_empty() {
            return Ok(features);
        }
        features.table_rows = isolated
            .kept
            .iter()
            .flat_map(|(range, _)| range.clone())
            .collect();
        let parts: Vec<RecordBatch> = isolated.kept.into_iter().map(|(_, f)| f).collect();
        features.features = Some(
            concat_batches(self.transform.output_schema(), &parts).map_err(|e: ArrowError| {
                FeatureError::Internal(format!("kept rows do not combine: {e}"))
            })?,
        );
        Ok(features)
    }

    /// The decoded rows followed by their window features; the state
    /// changes that fold them in and the count of late events. A pipeline
    /// without `[windows]` needs no state (`None`).
    fn with_windows(
        &self,
        decoded: RecordBatch,
        state: Option<WindowState<'_>>,
    ) -> Result<(RecordBatch, Vec<Change>, u64), FeatureError> {
        let Some(windows) = &self.windows else {
            return Ok((decoded, Vec::new(), 0));
        };
        let Some(state) = state else {
            return Err(FeatureError::Internal(
                "window features without a window state to read".into(),
            ));
        };
        let computed = match state {
            WindowState::Live {
                checkpoint,
                partitions,
                already_folded,
            } => {
                let order: Vec<usize> = (0..decoded.num_rows()).collect();
                windows.compute(&decoded, partitions, &order, already_folded, checkpoint)?
            }
            WindowState::History => WindowOutput {
                columns: windows.history(&decoded)?,
                changes: Vec::new(),
                late: 0,
            },
        };
        let mut columns = decoded.columns().to_vec();
        columns.extend(computed.columns);
        let table = RecordBatch::try_new(self.table_schema.clone(), columns).map_err(|e| {
            FeatureError::Internal(format!("window features do not join the batch: {e}"))
        })?;
        Ok((table, computed.changes, computed.late))
    }
}
