//! The per-batch work between source and sink: decode, SQL, score, and turn
//! the result into output records. No I/O happens here, so it runs the same
//! against Kafka, in the demo, in benchmarks and in tests.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{concat, concat_batches};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::batch::Batch;
use crate::config::Pipeline;
use crate::decode::{Decoder, RejectKind, Rejected};
use crate::model::{BundleError, ModelBundle};
use crate::output::{BatchOutput, DeadLetter, Decision, Outgoing, ScoreRecord};
use crate::schema::RecordSchema;
use crate::transform::{SqlTransform, TransformError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Model(#[from] BundleError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What an engine is built from; a [`Pipeline`] supplies all of it.
pub struct EngineSpec<'a> {
    pub schema: RecordSchema,
    pub max_record_bytes: usize,
    pub event_id_field: &'a str,
    pub sql: &'a str,
    pub model: ModelBundle,
    pub threshold_override: Option<f64>,
}

/// The rows that made it through the SQL: their features and event ids.
struct TransformedRows {
    features: RecordBatch,
    event_ids: ArrayRef,
    /// Per row, the index of the input record it came from.
    source_index: Vec<usize>,
}

pub struct Engine {
    decoder: Decoder,
    transform: SqlTransform,
    model: Arc<ModelBundle>,
    threshold: f64,
    event_id_column: usize,
}

impl Engine {
    /// Loads the pipeline's model bundle and plans its SQL.
    pub async fn for_pipeline(pipeline: &Pipeline) -> Result<Self, EngineError> {
        let model = ModelBundle::load(&pipeline.model_path)?;
        Self::new(EngineSpec {
            schema: pipeline.schema.clone(),
            max_record_bytes: pipeline.max_record_bytes,
            event_id_field: &pipeline.event_id_field,
            sql: &pipeline.sql,
            model,
            threshold_override: pipeline.threshold_override,
        })
        .await
    }

    pub async fn new(spec: EngineSpec<'_>) -> Result<Self, EngineError> {
        let event_id_column = spec.schema.index_of(spec.event_id_field).ok_or_else(|| {
            EngineError::Internal(format!(
                "event id field `{}` is not in the schema",
                spec.event_id_field
            ))
        })?;
        let transform =
            SqlTransform::plan(spec.sql, &spec.schema.name, spec.schema.arrow.clone()).await?;
        spec.model.check_fits(transform.output_schema())?;
        Ok(Self {
            decoder: Decoder::new(spec.schema, spec.max_record_bytes),
            transform,
            threshold: spec.threshold_override.unwrap_or(spec.model.threshold),
            model: Arc::new(spec.model),
            event_id_column,
        })
    }

    pub fn model(&self) -> &ModelBundle {
        &self.model
    }

    /// Scores one batch. Bad records become dead letters; only an internal
    /// failure (a bug, not bad data) is an error.
    pub async fn process(&self, batch: &Batch) -> Result<BatchOutput, EngineError> {
        let decoded = self
            .decoder
            .decode(batch.records.iter().map(|r| r.payload.as_deref()))
            .map_err(|e| {
                EngineError::Internal(format!("decoded columns do not form a batch: {e}"))
            })?;
        let mut rejected = decoded.rejected;
        let mut output = BatchOutput::default();
        if decoded.batch.num_rows() > 0
            && let Some(rows) = self
                .transform_rows(decoded.batch, decoded.source_index, &mut rejected)
                .await?
        {
            self.score_rows(
                batch,
                &rows.features,
                rows.event_ids.as_string::<i32>(),
                &rows.source_index,
                &mut output,
                &mut rejected,
            )?;
        }
        output.dead_letters = rejected
            .into_iter()
            .map(|r| {
                let record = &batch.records[r.index];
                DeadLetter {
                    key: record.key.clone(),
                    payload: record.payload.clone(),
                    kind: r.kind,
                    message: r.message,
                    source_topic: batch.topic.clone(),
                    source_partition: record.partition,
                    source_offset: record.offset,
                }
            })
            .collect();
        Ok(output)
    }

    /// Runs the SQL on the decoded rows. If it fails (a cast of a bad value,
    /// say), it runs again row by row, so that only the rows it fails on are
    /// set aside and the rest of the batch is still scored. Failures are rare,
    /// so the slow path costs nothing in the common case.
    async fn transform_rows(
        &self,
        decoded: RecordBatch,
        source_index: Vec<usize>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<Option<TransformedRows>, EngineError> {
        let event_ids = decoded.column(self.event_id_column).clone();
        if let Ok(features) = self.transform.apply(decoded.clone()).await {
            return Ok(Some(TransformedRows {
                features,
                event_ids,
                source_index,
            }));
        }
        let (mut kept_features, mut kept_ids, mut kept_index) = (vec![], vec![], vec![]);
        for (row, &index) in source_index.iter().enumerate() {
            match self.transform.apply(decoded.slice(row, 1)).await {
                Ok(features) => {
                    kept_features.push(features);
                    kept_ids.push(event_ids.slice(row, 1));
                    kept_index.push(index);
                }
                Err(e) => rejected.push(Rejected {
                    index,
                    kind: RejectKind::TransformFailed,
                    message: e.to_string(),
                }),
            }
        }
        if kept_index.is_empty() {
            return Ok(None);
        }
        let internal =
            |e: ArrowError| EngineError::Internal(format!("rows do not concatenate: {e}"));
        let ids: Vec<&dyn Array> = kept_ids.iter().map(AsRef::as_ref).collect();
        Ok(Some(TransformedRows {
            features: concat_batches(self.transform.output_schema(), &kept_features)
                .map_err(internal)?,
            event_ids: concat(&ids).map_err(internal)?,
            source_index: kept_index,
        }))
    }

    /// Scores the SQL output and appends one score record per row (or a
    /// dead letter for a row the model cannot use).
    fn score_rows(
        &self,
        batch: &Batch,
        features: &RecordBatch,
        event_ids: &arrow::array::StringArray,
        source_index: &[usize],
        output: &mut BatchOutput,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), EngineError> {
        let scores = self
            .model
            .score(features)
            .map_err(|e| EngineError::Internal(format!("scoring failed: {e}")))?;
        let mut invalid = scores.invalid.iter().peekable();
        let scored_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (row, &index) in source_index.iter().enumerate() {
            if let Some((_, reason)) = invalid.next_if(|(r, _)| *r == row) {
                rejected.push(Rejected {
                    index,
                    kind: RejectKind::InvalidFeature,
                    message: reason.clone(),
                });
                continue;
            }
            let record = &batch.records[index];
            let score = scores.probability[row];
            let decision = if score >= self.threshold {
                output.flagged += 1;
                Decision::Flag
            } else {
                Decision::Pass
            };
            let value = ScoreRecord {
                event_id: Cow::Borrowed(event_ids.value(row)),
                topic: Cow::Borrowed(&batch.topic),
                partition: record.partition,
                offset: record.offset,
                score,
                decision,
                model_name: Cow::Borrowed(&self.model.name),
                model_version: Cow::Borrowed(&self.model.version),
                reasons: scores.reasons[row]
                    .iter()
                    .flatten()
                    .map(|&j| Cow::Borrowed(self.model.features[j as usize].as_str()))
                    .collect(),
                scored_at: Cow::Borrowed(&scored_at),
            };
            let payload = serde_json::to_vec(&value).map_err(|e| {
                EngineError::Internal(format!("score record does not serialise: {e}"))
            })?;
            output.scores.push(Outgoing {
                key: record.key.clone(),
                payload,
            });
        }
        Ok(())
    }
}
