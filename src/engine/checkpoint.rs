//! Staging and checkpointing: a batch's state changes are staged with its
//! offsets when it is processed, and written once its outputs are
//! acknowledged (ARCHITECTURE.md §2).

use super::{Engine, EngineError};
use crate::batch::Batch;
use crate::state::{Change, Checkpoint, Committed, Staged};
use crate::telemetry::events::{CheckpointWritten, Event};

impl Engine {
    /// Stages a processed batch's state changes with its next offsets; they
    /// are written by [`Engine::checkpoint`] once the outputs are delivered.
    pub(super) fn stage(&self, batch: &Batch, changes: Vec<Change>) -> Option<Staged> {
        self.state.as_ref().map(|state| {
            state
                .checkpoint
                .stage(&batch.topic, &batch.next_offsets(), changes)
        })
    }

    /// Writes a delivered batch's state changes and offsets together (step
    /// 3 of ARCHITECTURE.md §2): call once its outputs are acknowledged, before
    /// its Kafka offsets are stored.
    pub fn checkpoint(&self, staged: Option<Staged>) -> Result<Committed, EngineError> {
        self.checkpoint_all(staged.into_iter().collect())
    }

    /// [`Engine::checkpoint`] for several delivered batches at once, in
    /// batch order: one write, each key at its latest value. The partitions
    /// it names as revoked were not written: their offsets must not be
    /// stored (ARCHITECTURE.md §2).
    pub fn checkpoint_all(&self, staged: Vec<Staged>) -> Result<Committed, EngineError> {
        let Some(state) = &self.state else {
            return Ok(Committed::default());
        };
        if staged.is_empty() {
            return Ok(Committed::default());
        }
        let started = std::time::Instant::now();
        let committed = state.checkpoint.commit_all(staged)?;
        CheckpointWritten {
            seconds: started.elapsed().as_secs_f64(),
        }
        .emit();
        Ok(committed)
    }

    /// The checkpoint, when the pipeline keeps state.
    pub fn state_checkpoint(&self) -> Option<&Checkpoint> {
        self.state.as_ref().map(|s| s.checkpoint.as_ref())
    }

    /// The checkpoint, shared: for what restores state on assignment.
    pub fn shared_checkpoint(&self) -> Option<std::sync::Arc<Checkpoint>> {
        self.state
            .as_ref()
            .map(|s| std::sync::Arc::clone(&s.checkpoint))
    }

    /// How long delivered batches' state may wait to be written together
    /// (zero without state: offsets are then stored batch by batch).
    pub fn checkpoint_interval(&self) -> std::time::Duration {
        self.state
            .as_ref()
            .map_or(std::time::Duration::ZERO, |s| s.checkpoint_interval)
    }
}
