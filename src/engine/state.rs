//! The engine's state: the pipeline's RocksDB (or its in-memory twin), and
//! the window features, label decoder and drift monitor that keep their
//! state in it (ARCHITECTURE.md §2).

use std::sync::Arc;

use super::EngineError;
use crate::config::Pipeline;
use crate::decode::Decoder;
use crate::drift::DriftMonitor;
use crate::outcomes;
use crate::state::{Checkpoint, Family, MemoryStore, RocksStore};
use crate::windows::Windows;

/// A pipeline's state: the checkpoint, and the window features it keeps.
pub struct EngineState {
    pub checkpoint: Arc<Checkpoint>,
    /// How long delivered batches' state may wait to be written together.
    pub checkpoint_interval: std::time::Duration,
    /// Shared with the feature path, which computes the features.
    pub windows: Option<Arc<Windows>>,
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
        let windows = pipeline
            .windows
            .clone()
            .map(|spec| Arc::new(Windows::new(spec)));
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
            labels: pipeline.labels_decoder(),
            drift,
        }))
    }

    /// Copies every commit to `log`, so that each partition's state can
    /// follow the partition to another instance (ARCHITECTURE.md §2).
    pub fn with_changelog(self, log: Arc<dyn crate::state::Changelog>) -> Self {
        let checkpoint = Arc::into_inner(self.checkpoint)
            .expect("the changelog is added before the checkpoint is shared")
            .with_changelog(log, partition_of);
        Self {
            checkpoint: Arc::new(checkpoint),
            ..self
        }
    }

    /// The pipeline's window features over an in-memory store: for tests
    /// and benches that need no durable state.
    pub fn in_memory(pipeline: &Pipeline) -> Result<Self, EngineError> {
        Ok(Self {
            checkpoint: Arc::new(Checkpoint::new(Arc::new(MemoryStore::default()))?),
            checkpoint_interval: std::time::Duration::ZERO,
            windows: pipeline
                .windows
                .clone()
                .map(|spec| Arc::new(Windows::new(spec))),
            labels: pipeline.labels_decoder(),
            drift: pipeline.drift.clone().map(DriftMonitor::new),
        })
    }
}

/// The input partition a stored key belongs to, from each room's key
/// layout; `None` for the topic-wide keys (drift judgements).
fn partition_of(family: Family, key: &[u8]) -> Option<i32> {
    match family {
        Family::Windows => crate::windows::partition_of_key(key),
        Family::Scores | Family::Outcomes => outcomes::partition_of_key(family, key),
        Family::Drift => crate::drift::store::partition_of(key),
        Family::Owners => crate::state::partition_of_owner_key(key),
        // The checkpoint reads its own offset keys.
        Family::Offsets => None,
    }
}
