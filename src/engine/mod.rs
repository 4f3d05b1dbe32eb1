//! The per-batch work between source and sink, one file per stage:
//! decode, features (windows and SQL), score, drift, and the staging and
//! checkpoint of its state (ARCHITECTURE.md §1). No I/O happens here, so it
//! runs the same against Kafka, in the demo, in benchmarks and in tests;
//! the engine imports nothing from `kafka/`.

use std::sync::Arc;

use arrow::array::{AsArray, StringArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::batch::{Batch, SourceRecord};
use crate::config::{ModelSource, Pipeline, ReasonsFor, SqlFailureLimit};
use crate::decode::{Decoder, EventTimeBounds};
use crate::model::serving::follow::load_state;
use crate::model::serving::registry::{Registry, RegistryError};
use crate::model::{Bundle, BundleError, ModelSlot};
use crate::output::BatchOutput;
use crate::reject::{RejectKind, Rejected};
use crate::schema::RecordSchema;
use crate::state::StateError;
use crate::telemetry::events::{Event, LateEvents};
use crate::transform::TransformError;
use crate::windows::WindowError;

mod checkpoint;
mod decode;
mod drift;
pub mod features;
mod isolate;
mod labels;
mod score;
mod state;

use features::{FeatureError, FeaturePath, WindowState};
pub use labels::FoldedLabels;
pub use state::EngineState;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Model(#[from] BundleError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Windows(#[from] WindowError),
    #[error(transparent)]
    Features(FeatureError),
    #[error("drift monitoring cannot start: {0}")]
    Drift(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What an engine is built from; a [`Pipeline`] supplies all of it.
pub struct EngineSpec<'a> {
    pub schema: RecordSchema,
    pub max_record_bytes: usize,
    pub event_time_bounds: EventTimeBounds,
    pub event_id_field: &'a str,
    pub sql: &'a str,
    pub sql_failure_limit: SqlFailureLimit,
    pub model: Bundle,
    /// Scored beside the champion, to the shadow topic.
    pub challenger: Option<Bundle>,
    pub threshold_override: Option<f64>,
    pub reasons: ReasonsFor,
    /// Each score carries the model's input values.
    pub include_features: bool,
    /// Dead letters carry at most this much of a refused payload.
    pub dead_letter_payload_bytes: usize,
    pub state: Option<EngineState>,
}

impl<'a> EngineSpec<'a> {
    /// The pipeline's engine, scoring with `model`.
    pub fn for_pipeline(pipeline: &'a Pipeline, model: Bundle) -> Self {
        Self {
            schema: pipeline.schema.clone(),
            max_record_bytes: pipeline.max_record_bytes,
            event_time_bounds: pipeline.input_event_time_bounds(),
            event_id_field: &pipeline.event_id_field,
            sql: &pipeline.sql,
            sql_failure_limit: pipeline.sql_failure_limit,
            model,
            challenger: None,
            threshold_override: pipeline.threshold_override,
            reasons: pipeline.reasons,
            include_features: pipeline.include_features,
            dead_letter_payload_bytes: pipeline.batch.dead_letter_payload_bytes,
            state: None,
        }
    }
}

/// Folds a feature-path error into the engine's: the window and SQL
/// errors keep their own variants, so callers match them as before.
impl From<FeatureError> for EngineError {
    fn from(e: FeatureError) -> Self {
        match e {
            FeatureError::Transform(e) => Self::Transform(e),
            FeatureError::Windows(e) => Self::Windows(e),
            FeatureError::Internal(message) => Self::Internal(message),
            e @ FeatureError::SqlFailsOnMostRows { .. } => Self::Features(e),
        }
    }
}

/// The topic and partition a request's records carry: they come from no
/// topic, and partition -1 holds no checkpoint, so nothing counts as
/// already folded.
pub const REQUEST_TOPIC: &str = "request";
/// The partition of a request record whose partition is not known.
pub const NO_PARTITION: i32 = -1;

/// What a batch is scored for.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// The stream: fold, stage, count drift, compare the challenger.
    Stream,
    /// A request: read only.
    Request { include_features: bool },
}

/// A request record's answer: the score record the stream would write,
/// or why the stream would dead-letter it.
#[derive(Debug)]
pub enum Answer {
    Scored(Vec<u8>),
    Refused { kind: RejectKind, message: String },
}

/// The rows that made it through the SQL: their features and event ids.
pub(crate) struct TransformedRows {
    features: RecordBatch,
    /// As text, whatever the field's type: the score echoes it as a string.
    event_ids: StringArray,
    /// Per row, the index of the input record it came from.
    source_index: Vec<usize>,
}

/// A batch after the feature path: the table drift reads, the rows to
/// score, the records the SQL refused, and the state changes to stage.
struct BatchFeatures {
    table: RecordBatch,
    rows: Option<TransformedRows>,
    refused: Vec<Rejected>,
    changes: Vec<crate::state::Change>,
}

pub struct Engine {
    decoder: Decoder,
    features: FeaturePath,
    models: Arc<ModelSlot>,
    reasons: ReasonsFor,
    include_features: bool,
    event_id_column: usize,
    dead_letter_payload_bytes: usize,
    state: Option<EngineState>,
}

impl Engine {
    /// Loads the pipeline's model bundle (or its registry's champion and
    /// challenger) and plans its SQL.
    pub async fn for_pipeline(pipeline: &Pipeline) -> Result<Self, EngineError> {
        Self::for_pipeline_with_changelog(pipeline, None).await
    }

    /// [`Engine::for_pipeline`], its checkpoints copied to `changelog`
    /// first (`[state] changelog`; ARCHITECTURE.md §2).
    pub async fn for_pipeline_with_changelog(
        pipeline: &Pipeline,
        changelog: Option<Arc<dyn crate::state::Changelog>>,
    ) -> Result<Self, EngineError> {
        let (model, challenger) = match &pipeline.model {
            ModelSource::Bundle(path) => (Bundle::load(path)?, None),
            ModelSource::Registry { dir, name, .. } => load_state(&Registry::open(dir), name)?,
        };
        let state = EngineState::open(pipeline)?.map(|state| match changelog {
            Some(log) => state.with_changelog(log),
            None => state,
        });
        Self::new(EngineSpec {
            challenger,
            state,
            ..EngineSpec::for_pipeline(pipeline, model)
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
        let windows = spec.state.as_ref().and_then(|s| s.windows.clone());
        let features =
            FeaturePath::plan(&spec.schema, spec.sql, windows, spec.sql_failure_limit).await?;
        if let Some(drift) = spec.state.as_ref().and_then(|s| s.drift.as_ref()) {
            drift
                .check(spec.model.manifest.reference.as_ref())
                .map_err(EngineError::Drift)?;
        }
        let models = ModelSlot::new(
            spec.model,
            spec.challenger,
            Arc::clone(features.output_schema()),
            spec.threshold_override,
        )?;
        Ok(Self {
            decoder: Decoder::new(spec.schema, spec.max_record_bytes)
                .with_event_time_bounds(&spec.event_time_bounds),
            features,
            models: Arc::new(models),
            reasons: spec.reasons,
            include_features: spec.include_features,
            event_id_column,
            dead_letter_payload_bytes: spec.dead_letter_payload_bytes,
            state: spec.state,
        })
    }

    /// Lets drift monitoring wait for every partition this instance holds
    /// before it judges a window.
    pub fn follow_assignment(&self, assignment: Arc<crate::batch::Assignment>) {
        if let Some((_, drift)) = self.drift() {
            drift.follow(assignment);
        }
    }

    /// Tells the engine how many partitions the input has: a window key
    /// spread over them is summed over them
    /// ([`crate::windows::Windows::spread_over`]), and with a changelog
    /// drift is judged once for the topic.
    pub fn know_partitions(&self, partitions: i32) {
        let Some(state) = &self.state else {
            return;
        };
        if let Some(windows) = &state.windows {
            windows.spread_over(partitions);
        }
        // With a changelog, partitions move between instances: drift is
        // judged once for the topic, by the holder of partition 0.
        if let Some(drift) = &state.drift
            && state.checkpoint.changelog_topic().is_some()
        {
            drift.judge_for_topic(partitions);
        }
    }

    /// Whether a stored change is one an instance keeps a copy of from the
    /// partitions it does not hold: the window keys spread over partitions,
    /// the drift counts, and who holds each partition (for the request API).
    pub fn read_across_partitions(
        &self,
    ) -> Arc<dyn Fn(&crate::state::Change) -> bool + Send + Sync> {
        let windows = self.state.as_ref().and_then(|s| s.windows.clone());
        Arc::new(move |change| match change.family {
            crate::state::Family::Windows => windows
                .as_ref()
                .is_some_and(|w| w.is_spread_key(&change.key)),
            // Every partition's drift counts and progress, for the judge.
            crate::state::Family::Drift => crate::drift::store::partition_of(&change.key).is_some(),
            crate::state::Family::Owners => true,
            _ => false,
        })
    }

    /// The models this engine scores with; swap them here.
    pub fn models(&self) -> &Arc<ModelSlot> {
        &self.models
    }

    /// Scores one batch, stage by stage. Bad records become dead letters;
    /// only an internal failure (a bug, not bad data) or an SQL that fails
    /// on most rows is an error.
    pub async fn process(&self, batch: &Batch) -> Result<BatchOutput, EngineError> {
        let (output, _) = self.run_stages(batch, Purpose::Stream).await?;
        Ok(output)
    }

    /// Scores records as the stream would score them now, and changes
    /// nothing: the request API's read path (ARCHITECTURE.md §1). The same
    /// decode, feature path and models; each record is counted in its
    /// window features as the stream counts its current event, but nothing
    /// is folded or staged, counted for drift, or compared with the
    /// challenger: the record reaches the state when it arrives on the
    /// input topic. Each record comes with the input partition it will land
    /// on, whose state it is read against when windows are kept per
    /// partition ([`NO_PARTITION`] when they are not, or it is not known).
    /// One answer per record, in order.
    pub async fn score_request(
        &self,
        records: Vec<(i32, Vec<u8>)>,
        include_features: bool,
    ) -> Result<Vec<Answer>, EngineError> {
        let mut batch = Batch::new(REQUEST_TOPIC);
        batch.records = records
            .into_iter()
            .enumerate()
            .map(|(i, (partition, payload))| {
                SourceRecord::new(partition, i as i64, None, Some(payload))
            })
            .collect();
        let (output, rejected) = self
            .run_stages(&batch, Purpose::Request { include_features })
            .await?;
        let mut answers: Vec<Option<Answer>> = (0..batch.len()).map(|_| None).collect();
        for score in output.scores {
            answers[score.source_index] = Some(Answer::Scored(score.payload));
        }
        for r in rejected {
            answers[r.index] = Some(Answer::Refused {
                kind: r.kind,
                message: r.message,
            });
        }
        answers
            .into_iter()
            .map(|a| {
                a.ok_or_else(|| EngineError::Internal("a request record got no answer".into()))
            })
            .collect()
    }

    /// The stages in order. For the stream, the batch's dead letters and
    /// staged state go into the output; for a request, nothing is staged
    /// and the refused records come back beside it.
    async fn run_stages(
        &self,
        batch: &Batch,
        purpose: Purpose,
    ) -> Result<(BatchOutput, Vec<Rejected>), EngineError> {
        let stream = matches!(purpose, Purpose::Stream);
        // Decode (decode.rs): records below the checkpoint are scored but
        // not folded into the state again.
        let already_folded = match stream {
            true => self.already_folded(batch),
            false => vec![false; batch.len()],
        };
        let all: Vec<usize> = (0..batch.records.len()).collect();
        let decoded = self.decode_records(&self.decoder, batch, &all)?;
        let mut rejected = decoded.rejected;
        // Features (features.rs): window features, then the SQL.
        let features = self
            .compute_features(batch, decoded.batch, &decoded.source_index, &already_folded)
            .await?;
        rejected.extend(features.refused);
        let mut state_changes = features.changes;
        // Score (score.rs): the whole batch by the lineup loaded here.
        let lineup = self.models.current();
        let mut output = BatchOutput::default();
        if let Some(rows) = &features.rows {
            let scored =
                self.score_rows(batch, rows, &lineup, purpose, &mut output, &mut rejected)?;
            if stream {
                state_changes.extend(scored.kept);
                // Drift (drift.rs): a record read again below the
                // checkpoint was counted already.
                let counted = scored
                    .rows
                    .into_iter()
                    .filter(|&(_, index, _, _)| !already_folded[index])
                    .collect();
                state_changes.extend(self.observe_drift(
                    batch,
                    &lineup,
                    rows,
                    (&features.table, &decoded.source_index),
                    counted,
                    &mut output,
                )?);
                self.models.note_scored(&lineup, batch);
            }
        }
        output.lineup = Some(lineup);
        if !stream {
            return Ok((output, rejected));
        }
        output.dead_letters = self.dead_letters(batch, rejected);
        // Stage (checkpoint.rs): written once the outputs are delivered.
        output.staged = self.stage(batch, state_changes);
        Ok((output, Vec::new()))
    }

    /// The batch through the one feature path, against the live state; the
    /// rows it gives are mapped back to their records and event ids.
    async fn compute_features(
        &self,
        batch: &Batch,
        decoded: RecordBatch,
        source_index: &[usize],
        already_folded: &[bool],
    ) -> Result<BatchFeatures, EngineError> {
        let partitions: Vec<i32> = source_index
            .iter()
            .map(|&i| batch.records[i].partition)
            .collect();
        let rows_folded: Vec<bool> = source_index.iter().map(|&i| already_folded[i]).collect();
        // Without state the pipeline has no window features.
        let window_state = self.state.as_ref().map(|state| WindowState::Live {
            checkpoint: &state.checkpoint,
            partitions: &partitions,
            already_folded: &rows_folded,
        });
        let computed = self.features.compute(decoded, window_state).await?;
        LateEvents {
            topic: &batch.topic,
            count: computed.late,
        }
        .emit();
        let refused = computed
            .failed
            .into_iter()
            .map(|(row, message)| Rejected {
                index: source_index[row],
                kind: RejectKind::TransformFailed,
                message,
            })
            .collect();
        let rows = match computed.features {
            None => None,
            Some(features) => {
                let internal = |e: arrow::error::ArrowError| {
                    EngineError::Internal(format!("event ids do not read: {e}"))
                };
                let event_ids = cast(computed.table.column(self.event_id_column), &DataType::Utf8)
                    .map_err(internal)?;
                let event_ids = if computed.table_rows.len() == computed.table.num_rows() {
                    event_ids
                } else {
                    let kept: Vec<u32> = computed.table_rows.iter().map(|&r| r as u32).collect();
                    take(&event_ids, &UInt32Array::from(kept), None).map_err(internal)?
                };
                Some(TransformedRows {
                    features,
                    event_ids: event_ids.as_string::<i32>().clone(),
                    source_index: computed
                        .table_rows
                        .iter()
                        .map(|&row| source_index[row])
                        .collect(),
                })
            }
        };
        Ok(BatchFeatures {
            table: computed.table,
            rows,
            refused,
            changes: computed.changes,
        })
    }
}
