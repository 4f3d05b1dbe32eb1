//! The engine's state: the pipeline's RocksDB (or its in-memory twin) and
//! window features, what a batch folds into them, the labels topic's
//! batches, and the checkpoint after delivery (ARCHITECTURE.md §2).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::{Engine, EngineError};
use crate::batch::Batch;
use crate::config::Pipeline;
use crate::decode::{Decoded, Decoder, RawRecord};
use crate::drift::DriftMonitor;
use crate::outcomes;
use crate::state::{Change, Checkpoint, MemoryStore, RocksStore, Staged};
use crate::telemetry::names;
use crate::windows::Windows;

/// A pipeline's state: the checkpoint, and the window features it keeps.
pub struct EngineState {
    pub checkpoint: Arc<Checkpoint>,
    /// How long delivered batches' state may wait to be written together.
    pub checkpoint_interval: std::time::Duration,
    pub windows: Option<Windows>,
    /// Decodes the labels topic's records, when a feature reads labels.
    pub labels: Option<Decoder>,
    /// Drift windows over the scored rows, when the pipeline has `[drift]`.
    pub drift: Option<DriftMonitor>,
}

impl EngineState {
    /// Opens the pipeline's RocksDB, when it keeps state.
    pub fn open(pipeline: &Pipeline) -> Result<Option<Self>, EngineError> {
        let Some(settings) = &pipeline.state else {
            return Ok(None);
        };
        let windows = pipeline.windows.clone().map(Windows::new);
        let drift = pipeline.drift.clone().map(DriftMonitor::new);
        let started = std::time::Instant::now();
        let mut expiries = Vec::new();
        if let Some(windows) = &windows {
            expiries.push((crate::state::Family::Windows, windows.expiry()));
        }
        if let Some(drift) = &drift {
            expiries.push((crate::state::Family::Drift, drift.expiry() as _));
        }
        if let Some(labels) = &pipeline.labels {
            expiries.extend(outcomes::expiries(labels.score_retention_ms));
        }
        let store = RocksStore::open(&settings.path, settings.sync, &expiries)?;
        let checkpoint = Checkpoint::new(Arc::new(store))?;
        let folded = checkpoint.folded_until(&pipeline.kafka.input_topic);
        tracing::info!(
            path = %settings.path.display(),
            partitions = %folded
                .iter()
                .map(|(p, next)| format!("{p}@{next}"))
                .collect::<Vec<_>>()
                .join(","),
            open_ms = started.elapsed().as_millis(),
            "state opened; records below these offsets are already folded in: read again, they are scored but not folded again"
        );
        Ok(Some(Self {
            checkpoint: Arc::new(checkpoint),
            checkpoint_interval: settings.checkpoint_interval,
            windows,
            labels: Decoder::for_labels(pipeline),
            drift,
        }))
    }

    /// The pipeline's window features over an in-memory store: for tests
    /// and benches that need no durable state.
    pub fn in_memory(pipeline: &Pipeline) -> Result<Self, EngineError> {
        Ok(Self {
            checkpoint: Arc::new(Checkpoint::new(Arc::new(MemoryStore::default()))?),
            checkpoint_interval: std::time::Duration::ZERO,
            windows: pipeline.windows.clone().map(Windows::new),
            labels: Decoder::for_labels(pipeline),
            drift: pipeline.drift.clone().map(DriftMonitor::new),
        })
    }
}

/// Records this far below their partition's checkpointed offset are a
/// rewind, not the tail a crash leaves: said in a WARN.
const FAR_REWIND: i64 = 10_000;

/// A labels batch, folded and staged: commit `staged` with
/// [`Engine::checkpoint`], then publish the metrics of `days`.
pub struct FoldedLabels {
    pub staged: Staged,
    /// The transaction days that gained outcomes.
    pub days: BTreeSet<i64>,
}

impl Engine {
    /// Writes a delivered batch's state changes and offsets together (step
    /// 3 of ARCHITECTURE.md §2): call once its outputs are acknowledged, before
    /// its Kafka offsets are stored.
    pub fn checkpoint(&self, staged: Option<Staged>) -> Result<(), EngineError> {
        self.checkpoint_all(staged.into_iter().collect())
    }

    /// [`Engine::checkpoint`] for several delivered batches at once, in
    /// batch order: one write, each key at its latest value.
    pub fn checkpoint_all(&self, staged: Vec<Staged>) -> Result<(), EngineError> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        if staged.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        state.checkpoint.commit_all(staged)?;
        metrics::histogram!(names::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The checkpoint, when the pipeline keeps state.
    pub fn state_checkpoint(&self) -> Option<&Checkpoint> {
        self.state.as_ref().map(|s| s.checkpoint.as_ref())
    }

    /// How long delivered batches' state may wait to be written together
    /// (zero without state: offsets are then stored batch by batch).
    pub fn checkpoint_interval(&self) -> std::time::Duration {
        self.state
            .as_ref()
            .map_or(std::time::Duration::ZERO, |s| s.checkpoint_interval)
    }

    /// Folds a batch from the labels topic into the label windows and
    /// stages it with its offsets; commit it with [`Engine::checkpoint`].
    /// Labels that do not decode are skipped with a warning and counted:
    /// they carry no score to send anywhere.
    pub fn fold_labels(&self, batch: &Batch) -> Result<Option<FoldedLabels>, EngineError> {
        let Some((state, windows, decoder)) = self
            .state
            .as_ref()
            .and_then(|s| Some((s, s.windows.as_ref()?, s.labels.as_ref()?)))
        else {
            return Ok(None);
        };
        let decoded = self.decode_records(decoder, batch, &self.not_yet_folded(batch))?;
        for refused in &decoded.rejected {
            let record = &batch.records[refused.index];
            tracing::warn!(
                topic = %batch.topic,
                partition = record.partition,
                offset = record.offset,
                reason = %refused.message,
                "label skipped: it does not decode"
            );
        }
        if !decoded.rejected.is_empty() {
            metrics::counter!(names::LABELS_REFUSED, "topic" => batch.topic.clone())
                .increment(decoded.rejected.len() as u64);
        }
        let partitions: Vec<i32> = decoded
            .source_index
            .iter()
            .map(|&i| batch.records[i].partition)
            .collect();
        let mut folded = windows.fold_labels(&decoded.batch, &partitions, &state.checkpoint)?;
        if folded.late > 0 {
            metrics::counter!(names::LATE_EVENTS, "topic" => batch.topic.clone())
                .increment(folded.late);
        }
        let scoped: Vec<i32> = partitions.iter().map(|&p| windows.scoped(p)).collect();
        let joined = outcomes::join(
            &decoded.batch,
            &scoped,
            windows
                .spec()
                .labels
                .as_ref()
                .map_or("event_time", |l| l.event_time.as_str()),
            &state.checkpoint,
        )?;
        metrics::counter!(names::LABELS_MATCHED).increment(joined.matched);
        metrics::counter!(names::LABELS_UNMATCHED).increment(joined.unmatched);
        folded.changes.extend(joined.changes);
        Ok(Some(FoldedLabels {
            staged: state
                .checkpoint
                .stage(&batch.topic, &batch.next_offsets(), folded.changes),
            days: joined.days,
        }))
    }

    /// Sets the label gauges from the newest of `days` (once its outcomes
    /// are checkpointed): that day's AUC, average precision and card
    /// precision@100 over the labels so far.
    pub fn publish_label_metrics(&self, days: &BTreeSet<i64>) -> Result<(), EngineError> {
        let (Some(state), Some(&day)) = (&self.state, days.last()) else {
            return Ok(());
        };
        let metrics = outcomes::day_metrics(state.checkpoint.store(), day)?;
        for (name, value) in [
            (names::LABELS_DAY_AUC, metrics.auc),
            (names::LABELS_DAY_AP, metrics.average_precision),
            (
                names::LABELS_DAY_CARD_PRECISION,
                metrics.card_precision_at_100,
            ),
        ] {
            metrics::gauge!(name).set(value.unwrap_or(f64::NAN));
        }
        metrics::gauge!(names::LABELS_DAY_LABELLED).set(metrics.labelled as f64);
        metrics::gauge!(names::LABELS_DAY).set((day * 86_400) as f64);
        Ok(())
    }

    /// Decodes the batch's `records` (indices into it); the indices of rows
    /// and rejections are the batch's.
    pub(super) fn decode_records(
        &self,
        decoder: &Decoder,
        batch: &Batch,
        records: &[usize],
    ) -> Result<Decoded, EngineError> {
        let mut decoded = decoder
            .decode(records.iter().map(|&i| RawRecord {
                bytes: batch.records[i].payload.as_deref(),
                size: batch.records[i].payload_size,
            }))
            .map_err(|e| {
                EngineError::Internal(format!("decoded columns do not form a batch: {e}"))
            })?;
        // Back from positions among `records` to the batch's.
        for i in &mut decoded.source_index {
            *i = records[*i];
        }
        for r in &mut decoded.rejected {
            r.index = records[r.index];
        }
        Ok(decoded)
    }

    /// Per record of the batch, whether it lies below its partition's
    /// checkpointed offset: its event is already in the state. Such a
    /// record is read again after a crash between the checkpoint and the
    /// Kafka commit, or after the group was rewound to score a period
    /// again; it is scored as usual, and its state update is skipped.
    pub(super) fn already_folded(&self, batch: &Batch) -> Vec<bool> {
        let Some(state) = &self.state else {
            return vec![false; batch.records.len()];
        };
        let folded = state.checkpoint.folded_until(&batch.topic);
        let below: Vec<bool> = batch
            .records
            .iter()
            .map(|r| {
                folded
                    .get(&r.partition)
                    .is_some_and(|&next| r.offset < next)
            })
            .collect();
        let count = below.iter().filter(|&&b| b).count();
        if count > 0 {
            metrics::counter!(names::ALREADY_FOLDED, "topic" => batch.topic.clone())
                .increment(count as u64);
            let deepest = batch
                .records
                .iter()
                .filter_map(|r| Some((r.partition, r.offset, *folded.get(&r.partition)?)))
                .filter(|(_, offset, next)| offset < next)
                .max_by_key(|(_, offset, next)| next - offset);
            if let Some((partition, offset, next)) = deepest {
                if next - offset > FAR_REWIND {
                    tracing::warn!(
                        topic = %batch.topic,
                        partition,
                        offset,
                        checkpoint = next,
                        "records far below the checkpointed offset: a rewind (or a recreated \
                         topic); they are scored, and not folded into the window state again"
                    );
                } else {
                    tracing::info!(
                        records = count,
                        "records already folded into state before a restart: scored again, \
                         not folded again"
                    );
                }
            }
        }
        below
    }

    /// The indices of the batch's records not yet folded into state (the
    /// labels topic's: a label read again has nothing to score).
    fn not_yet_folded(&self, batch: &Batch) -> Vec<usize> {
        self.already_folded(batch)
            .into_iter()
            .enumerate()
            .filter(|(_, folded)| !folded)
            .map(|(i, _)| i)
            .collect()
    }

    /// Adds the window features to the decoded rows, computed against the
    /// state as of the previous batch; returns the table and the state
    /// changes to stage.
    pub(super) fn with_window_features(
        &self,
        batch: &Batch,
        decoded: RecordBatch,
        source_index: &[usize],
        already_folded: &[bool],
    ) -> Result<(RecordBatch, Vec<Change>), EngineError> {
        let Some((state, windows)) = self
            .state
            .as_ref()
            .and_then(|s| s.windows.as_ref().map(|w| (s, w)))
        else {
            return Ok((decoded, Vec::new()));
        };
        let partitions: Vec<i32> = source_index
            .iter()
            .map(|&i| batch.records[i].partition)
            .collect();
        let order: Vec<usize> = (0..decoded.num_rows()).collect();
        let rows_folded: Vec<bool> = source_index.iter().map(|&i| already_folded[i]).collect();
        let computed = windows.compute(
            &decoded,
            &partitions,
            &order,
            &rows_folded,
            &state.checkpoint,
        )?;
        if computed.late > 0 {
            metrics::counter!(names::LATE_EVENTS, "topic" => batch.topic.clone())
                .increment(computed.late);
        }
        let mut columns = decoded.columns().to_vec();
        columns.extend(computed.columns);
        let table = RecordBatch::try_new(self.table_schema.clone(), columns).map_err(|e| {
            EngineError::Internal(format!("window features do not join the batch: {e}"))
        })?;
        Ok((table, computed.changes))
    }
}
