//! The labels topic's stage: labels folded into the label windows and
//! joined to the scores kept for them, staged with their own offsets; each
//! day's label metrics once checkpointed.

use std::collections::BTreeSet;

use super::{Engine, EngineError};
use crate::batch::Batch;
use crate::outcomes;
use crate::state::Staged;
use crate::telemetry::events::{Event, LabelDay, LabelSkipped, LabelsFolded, LateEvents};

/// A labels batch, folded and staged: commit `staged` with
/// [`Engine::checkpoint`], then publish the metrics of `days`.
pub struct FoldedLabels {
    pub staged: Staged,
    /// The transaction days that gained outcomes.
    pub days: BTreeSet<i64>,
}

impl Engine {
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
            LabelSkipped {
                topic: &batch.topic,
                partition: record.partition,
                offset: record.offset,
                reason: &refused.message,
            }
            .emit();
        }
        let partitions: Vec<i32> = decoded
            .source_index
            .iter()
            .map(|&i| batch.records[i].partition)
            .collect();
        let mut folded = windows.fold_labels(&decoded.batch, &partitions, &state.checkpoint)?;
        LateEvents {
            topic: &batch.topic,
            count: folded.late,
        }
        .emit();
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
        LabelsFolded {
            topic: &batch.topic,
            refused: decoded.rejected.len(),
            matched: joined.matched,
            unmatched: joined.unmatched,
        }
        .emit();
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
        LabelDay {
            day_start_s: day * 86_400,
            labelled: metrics.labelled as u64,
            auc: metrics.auc,
            average_precision: metrics.average_precision,
            card_precision_at_100: metrics.card_precision_at_100,
        }
        .emit();
        Ok(())
    }
}
