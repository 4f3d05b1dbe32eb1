//! The decode stage: a batch's bytes to Arrow rows against the schema (what
//! does not fit becomes a dead letter), and which records are below the
//! checkpoint, already folded into the state (ARCHITECTURE.md §2).

use super::{Engine, EngineError};
use crate::batch::Batch;
use crate::decode::{Decoded, Decoder, RawRecord};
use crate::output::DeadLetter;
use crate::reject::Rejected;
use crate::telemetry::events::{Event, RecordsAlreadyFolded};

/// Records this far below their partition's checkpointed offset are a
/// rewind, not the tail a crash leaves: said in a WARN.
const FAR_REWIND: i64 = 10_000;

impl Engine {
    /// Dead letters for the batch's refused records, each with its reason.
    pub(super) fn dead_letters(&self, batch: &Batch, rejected: Vec<Rejected>) -> Vec<DeadLetter> {
        rejected
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
            .collect()
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
            let deepest = batch
                .records
                .iter()
                .filter_map(|r| Some((r.partition, r.offset, *folded.get(&r.partition)?)))
                .filter(|(_, offset, next)| offset < next)
                .max_by_key(|(_, offset, next)| next - offset);
            RecordsAlreadyFolded {
                topic: &batch.topic,
                count,
                deepest,
                far: deepest.is_some_and(|(_, offset, next)| next - offset > FAR_REWIND),
            }
            .emit();
        }
        below
    }

    /// The indices of the batch's records not yet folded into state (the
    /// labels topic's: a label read again has nothing to score).
    pub(super) fn not_yet_folded(&self, batch: &Batch) -> Vec<usize> {
        self.already_folded(batch)
            .into_iter()
            .enumerate()
            .filter(|(_, folded)| !folded)
            .map(|(i, _)| i)
            .collect()
    }
}
