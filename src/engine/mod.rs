//! The per-batch work between source and sink: decode, SQL, score, and turn
//! the result into output records. No I/O happens here, so it runs the same
//! against Kafka, in the demo, in benchmarks and in tests.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{AsArray, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::batch::Batch;
use crate::config::{ModelSource, Pipeline, ReasonsFor, SqlFailureLimit};
use crate::decode::{Decoder, EventTimeBounds};
use crate::drift::{Observation, ScoredRow};
use crate::error::{Chain, without_values};
use crate::isolate::isolate;
use crate::model::comparison::Pair;
use crate::model::follow::load_state;
use crate::model::registry::{Registry, RegistryError};
use crate::model::{Bundle, BundleError, Explain, Lineup, ModelSlot, Role, Scores};
use crate::outcomes;
use crate::output::{BatchOutput, DeadLetter, Decision, Outgoing, ReasonRecord, ScoreRecord};
use crate::reject::{RejectKind, Rejected};
use crate::schema::RecordSchema;
use crate::state::StateError;
use crate::transform::{SqlTransform, TransformError};
use crate::windows::WindowError;

mod state;

pub use state::{EngineState, FoldedLabels};

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
            event_time_bounds: EventTimeBounds::of_input(pipeline),
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

/// The rows that made it through the SQL: their features and event ids.
struct TransformedRows {
    features: RecordBatch,
    /// As text, whatever the field's type: the score echoes it as a string.
    event_ids: StringArray,
    /// Per row, the index of the input record it came from.
    source_index: Vec<usize>,
}

pub struct Engine {
    decoder: Decoder,
    transform: SqlTransform,
    sql_failure_limit: SqlFailureLimit,
    models: Arc<ModelSlot>,
    reasons: ReasonsFor,
    include_features: bool,
    event_id_column: usize,
    dead_letter_payload_bytes: usize,
    state: Option<EngineState>,
    /// The decoded columns plus the window features: the table the SQL reads.
    table_schema: arrow::datatypes::SchemaRef,
}

impl Engine {
    /// Loads the pipeline's model bundle (or its registry's champion and
    /// challenger) and plans its SQL.
    pub async fn for_pipeline(pipeline: &Pipeline) -> Result<Self, EngineError> {
        let (model, challenger) = match &pipeline.model {
            ModelSource::Bundle(path) => (Bundle::load(path)?, None),
            ModelSource::Registry { dir, name, .. } => load_state(&Registry::open(dir), name)?,
        };
        Self::new(EngineSpec {
            challenger,
            state: EngineState::open(pipeline)?,
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
        let table_schema = match spec.state.as_ref().and_then(|s| s.windows.as_ref()) {
            Some(windows) => windows.extend_schema(&spec.schema.arrow),
            None => spec.schema.arrow.clone(),
        };
        let transform =
            SqlTransform::plan(spec.sql, &spec.schema.name, table_schema.clone()).await?;
        if let Some(drift) = spec.state.as_ref().and_then(|s| s.drift.as_ref()) {
            drift
                .check(spec.model.manifest.reference.as_ref())
                .map_err(EngineError::Drift)?;
        }
        let models = ModelSlot::new(
            spec.model,
            spec.challenger,
            Arc::clone(transform.output_schema()),
            spec.threshold_override,
        )?;
        Ok(Self {
            decoder: Decoder::new(spec.schema, spec.max_record_bytes)
                .with_event_time_bounds(&spec.event_time_bounds),
            transform,
            sql_failure_limit: spec.sql_failure_limit,
            models: Arc::new(models),
            reasons: spec.reasons,
            include_features: spec.include_features,
            event_id_column,
            dead_letter_payload_bytes: spec.dead_letter_payload_bytes,
            state: spec.state,
            table_schema,
        })
    }

    /// Lets drift monitoring wait for every partition this instance holds
    /// before it judges a window.
    pub fn follow_assignment(&self, assignment: Arc<crate::kafka::context::Assignment>) {
        if let Some((_, drift)) = self.drift() {
            drift.follow(assignment);
        }
    }

    /// The models this engine scores with; swap them here.
    pub fn models(&self) -> &Arc<ModelSlot> {
        &self.models
    }

    /// Scores one batch. Bad records become dead letters; only an internal
    /// failure (a bug, not bad data) or an SQL that fails on most rows is an
    /// error.
    pub async fn process(&self, batch: &Batch) -> Result<BatchOutput, EngineError> {
        let already_folded = self.already_folded(batch);
        let all: Vec<usize> = (0..batch.records.len()).collect();
        let decoded = self.decode_records(&self.decoder, batch, &all)?;
        let source_index = decoded.source_index;
        let mut rejected = decoded.rejected;
        let (table, mut state_changes) =
            self.with_window_features(batch, decoded.batch, &source_index, &already_folded)?;
        // Drift reads the decoded columns after the SQL has taken the table.
        let decoded = self.drift().map(|_| (table.clone(), source_index.clone()));
        // Loaded once: the whole batch is scored by this lineup.
        let lineup = self.models.current();
        let mut output = BatchOutput::default();
        if table.num_rows() > 0
            && let Some(rows) = self
                .transform_rows(table, source_index, &mut rejected)
                .await?
        {
            let scored = self.score_rows(batch, &rows, &lineup, &mut output, &mut rejected)?;
            state_changes.extend(scored.kept);
            if let Some((decoded, decoded_index)) = &decoded {
                state_changes.extend(
                    self.observe_drift(
                        batch,
                        &lineup,
                        &rows,
                        (decoded, decoded_index),
                        // A record read again below the checkpoint was counted
                        // already.
                        scored
                            .rows
                            .into_iter()
                            .filter(|&(_, index, _, _)| !already_folded[index])
                            .collect(),
                        &mut output,
                    )?,
                );
            }
            self.models.note_scored(&lineup, batch);
        }
        output.lineup = Some(lineup);
        output.dead_letters = rejected
            .into_iter()
            .map(|r| {
                DeadLetter::for_record(
                    &batch.records[r.index],
                    &batch.topic,
                    r.kind,
                    r.message,
                    self.dead_letter_payload_bytes,
                )
            })
            .collect();
        output.staged = self.state.as_ref().map(|state| {
            state
                .checkpoint
                .stage(&batch.topic, &batch.next_offsets(), state_changes)
        });
        Ok(output)
    }

    /// Runs the SQL on the decoded rows. If it fails (a cast of a bad value,
    /// say), the failing rows are found by bisection and set aside, so the
    /// rest of the batch is still scored. Failures are rare, so the slow path
    /// costs nothing in the common case.
    async fn transform_rows(
        &self,
        decoded: RecordBatch,
        source_index: Vec<usize>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<Option<TransformedRows>, EngineError> {
        let event_ids = cast(decoded.column(self.event_id_column), &DataType::Utf8)
            .map_err(|e| EngineError::Internal(format!("event ids do not cast to text: {e}")))?;
        let batch_error = match self.transform.apply(decoded.clone()).await {
            Ok(features) => {
                return Ok(Some(TransformedRows {
                    features,
                    event_ids: event_ids.as_string::<i32>().clone(),
                    source_index,
                }));
            }
            Err(e) => without_values(&Chain(&e).to_string()),
        };
        let rows = decoded.num_rows();
        tracing::warn!(rows, error = %batch_error, "pipeline SQL failed on a batch; isolating the rows it fails on");
        let limit = self.sql_failure_limit;
        let tolerated = ((limit.max_share * rows as f64).floor() as usize)
            .max(limit.min_rows.saturating_sub(1));
        let isolated = isolate(rows, tolerated, |range| {
            self.transform
                .apply(decoded.slice(range.start, range.len()))
        })
        .await
        .map_err(|_| EngineError::SqlFailsOnMostRows {
            rows,
            tolerated,
            error: batch_error.clone(),
        })?;
        for (row, error) in isolated.failed {
            rejected.push(Rejected {
                index: source_index[row],
                kind: RejectKind::TransformFailed,
                message: without_values(&Chain(&error).to_string()),
            });
        }
        if isolated.kept.is_empty() {
            return Ok(None);
        }
        let internal =
            |e: ArrowError| EngineError::Internal(format!("kept rows do not combine: {e}"));
        let kept_rows: Vec<u32> = isolated
            .kept
            .iter()
            .flat_map(|(range, _)| range.clone())
            .map(|row| row as u32)
            .collect();
        let features: Vec<RecordBatch> = isolated.kept.into_iter().map(|(_, f)| f).collect();
        Ok(Some(TransformedRows {
            features: concat_batches(self.transform.output_schema(), &features)
                .map_err(internal)?,
            event_ids: take(&event_ids, &UInt32Array::from(kept_rows.clone()), None)
                .map_err(internal)?
                .as_string::<i32>()
                .clone(),
            source_index: kept_rows
                .iter()
                .map(|&row| source_index[row as usize])
                .collect(),
        }))
    }

    /// Scores the SQL output and appends one score record per row (or a
    /// dead letter for a row the model cannot use); with a challenger, also
    /// its shadow score of every row both models can score.
    fn score_rows(
        &self,
        batch: &Batch,
        rows: &TransformedRows,
        lineup: &Lineup,
        output: &mut BatchOutput,
        rejected: &mut Vec<Rejected>,
    ) -> Result<ScoredRows, EngineError> {
        let keeps_scores = self
            .state
            .as_ref()
            .filter(|s| s.labels.is_some())
            .and_then(|s| s.windows.as_ref());
        let mut kept = Vec::new();
        let mut scored = Vec::new();
        let scoring = |bundle: &Bundle| {
            let explain = match self.reasons {
                ReasonsFor::All => Explain::All,
                ReasonsFor::Flagged => Explain::AtOrAbove(self.models.threshold(bundle)),
            };
            let mut scores = bundle
                .score_explained(&rows.features, explain)
                .map_err(|e| EngineError::Internal(format!("scoring failed: {e}")))?;
            if self.include_features {
                scores.inputs = Some(bundle.feature_values(&rows.features).map_err(|e| {
                    EngineError::Internal(format!("feature values do not read: {e}"))
                })?);
            }
            Ok::<_, EngineError>(scores)
        };
        let champion = scoring(&lineup.champion)?;
        let challenger = match &lineup.challenger {
            Some(bundle) => Some((bundle, scoring(bundle)?)),
            None => None,
        };
        let champion_threshold = self.models.threshold(&lineup.champion);
        let writer = RecordWriter {
            batch,
            rows,
            scored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let mut pairs = Vec::new();
        let mut champion_invalid = champion.invalid.iter().peekable();
        let mut challenger_invalid = challenger
            .as_ref()
            .map(|(_, scores)| scores.invalid.iter().peekable());
        for (row, &index) in rows.source_index.iter().enumerate() {
            let challenger_cannot = challenger_invalid
                .as_mut()
                .is_some_and(|invalid| invalid.next_if(|(r, _, _)| *r == row).is_some());
            if let Some((_, kind, reason)) = champion_invalid.next_if(|(r, _, _)| *r == row) {
                rejected.push(Rejected {
                    index,
                    kind: *kind,
                    message: reason.clone(),
                });
                continue;
            }
            let flags = champion.probability[row] >= champion_threshold;
            output.flagged += usize::from(flags);
            scored.push((row, index, champion.probability[row], flags));
            if let Some(windows) = keeps_scores {
                kept.push((
                    windows.scoped(batch.records[index].partition),
                    rows.event_ids.value(row),
                    champion.probability[row],
                ));
            }
            output.scores.push(writer.record(
                row,
                &lineup.champion,
                &champion,
                flags,
                Role::Champion,
            )?);
            let Some((bundle, scores)) = challenger.as_ref().filter(|_| !challenger_cannot) else {
                continue;
            };
            let challenger_flags = scores.probability[row] >= self.models.threshold(bundle);
            output.shadow.push(writer.record(
                row,
                bundle,
                scores,
                challenger_flags,
                Role::Challenger,
            )?);
            pairs.push(Pair {
                champion: champion.probability[row],
                challenger: scores.probability[row],
                champion_flags: flags,
                challenger_flags,
            });
        }
        if !pairs.is_empty() {
            self.models.compare(pairs);
        }
        Ok(ScoredRows {
            kept: outcomes::keep_scores(kept.into_iter()),
            rows: scored,
        })
    }

    /// The state and its drift monitor, when the pipeline monitors drift.
    fn drift(&self) -> Option<(&EngineState, &crate::drift::DriftMonitor)> {
        self.state
            .as_ref()
            .and_then(|s| s.drift.as_ref().map(|d| (s, d)))
    }

    /// Counts the champion's scored rows into the drift windows; alerts from
    /// the windows this batch closed go out with its outputs. `decoded` is
    /// the decoded table and, per row, its record's index.
    fn observe_drift(
        &self,
        batch: &Batch,
        lineup: &Lineup,
        rows: &TransformedRows,
        (decoded, decoded_index): (&RecordBatch, &[usize]),
        scored: Vec<(usize, usize, f64, bool)>,
        output: &mut BatchOutput,
    ) -> Result<Vec<crate::state::Change>, EngineError> {
        let Some((state, drift)) = self.drift() else {
            return Ok(Vec::new());
        };
        let scored_rows: Vec<ScoredRow> = scored
            .into_iter()
            .filter_map(|(row, index, score, flagged)| {
                // Decoded rows are in record order, so the record's index
                // finds its row.
                let decoded_row = decoded_index.binary_search(&index).ok()?;
                Some(ScoredRow {
                    feature_row: row,
                    decoded_row,
                    partition: batch.records[index].partition,
                    score,
                    flagged,
                })
            })
            .collect();
        let manifest = &lineup.champion.manifest;
        let observed = drift.observe(
            &state.checkpoint,
            &Observation {
                model: &manifest.name,
                version: &manifest.version,
                reference: manifest.reference.as_ref(),
                features: &rows.features,
                decoded,
                rows: &scored_rows,
            },
        )?;
        output.alerts = observed
            .alerts
            .iter()
            .map(|alert| Outgoing {
                key: Some(alert.feature.clone().into_bytes()),
                payload: serde_json::to_vec(alert).expect("an alert serialises"),
                source_index: 0,
            })
            .collect();
        Ok(observed.changes)
    }
}

/// What scoring a batch gives besides its outputs.
struct ScoredRows {
    /// The changes that keep the champion's scores for their labels (none
    /// unless the pipeline reads labels).
    kept: Vec<crate::state::Change>,
    /// The champion's scored rows: feature row, record index, score, flag.
    rows: Vec<(usize, usize, f64, bool)>,
}

/// Builds score records for the rows of one batch.
struct RecordWriter<'a> {
    batch: &'a Batch,
    rows: &'a TransformedRows,
    scored_at: String,
}

impl RecordWriter<'_> {
    fn record(
        &self,
        row: usize,
        bundle: &Bundle,
        scores: &Scores,
        flags: bool,
        role: Role,
    ) -> Result<Outgoing, EngineError> {
        let index = self.rows.source_index[row];
        let record = &self.batch.records[index];
        let value = ScoreRecord {
            event_id: Cow::Borrowed(self.rows.event_ids.value(row)),
            topic: Cow::Borrowed(&self.batch.topic),
            partition: record.partition,
            offset: record.offset,
            score: scores.probability[row],
            decision: if flags {
                Decision::Flag
            } else {
                Decision::Pass
            },
            model_name: Cow::Borrowed(bundle.name()),
            model_version: Cow::Borrowed(bundle.version()),
            role,
            reasons: scores.reasons[row]
                .iter()
                .flatten()
                .map(|reason| ReasonRecord {
                    feature: Cow::Borrowed(
                        bundle.manifest.features[usize::from(reason.feature)]
                            .name
                            .as_str(),
                    ),
                    contribution: reason.contribution,
                })
                .collect(),
            scored_at: Cow::Borrowed(&self.scored_at),
            features: scores.inputs.as_ref().map(|inputs| {
                bundle
                    .manifest
                    .feature_names()
                    .zip(inputs.row(row))
                    .map(|(name, value)| (Cow::Borrowed(name), *value))
                    .collect()
            }),
        };
        let payload = serde_json::to_vec(&value)
            .map_err(|e| EngineError::Internal(format!("score record does not serialise: {e}")))?;
        Ok(Outgoing {
            key: record.key.clone(),
            payload,
            source_index: index,
        })
    }
}
