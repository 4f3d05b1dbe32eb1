//! Readiness: an instance is ready when it holds partitions and a model.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::names;

#[derive(Debug, Default)]
pub struct Health {
    partitions: AtomicUsize,
    model_loaded: AtomicBool,
    /// Partitions being restored from the changelog.
    restoring: AtomicUsize,
}

impl Health {
    /// Counts partitions assigned (`+n`) or revoked (`-n`). Counting by
    /// change rather than setting a total holds for both rebalance
    /// protocols: eager revokes everything before each assignment,
    /// cooperative moves only some partitions.
    pub fn change_partitions(&self, assigned: usize, revoked: usize) {
        // Rebalance callbacks come one at a time, from the consumer.
        let held = (self.partitions.load(Ordering::Relaxed) + assigned).saturating_sub(revoked);
        self.partitions.store(held, Ordering::Relaxed);
        metrics::gauge!(names::PARTITIONS_ASSIGNED).set(held as f64);
    }

    /// The model slot shows which versions serve (`streamscore_model_info`).
    pub fn set_model_loaded(&self) {
        self.model_loaded.store(true, Ordering::Relaxed);
    }

    pub fn partitions(&self) -> usize {
        self.partitions.load(Ordering::Relaxed)
    }

    /// Sets how many partitions are being restored (0 when done).
    pub fn set_restoring(&self, partitions: usize) {
        self.restoring.store(partitions, Ordering::Relaxed);
    }

    /// Why the instance is not ready, or `None` when it is.
    pub fn not_ready_because(&self) -> Option<String> {
        let restoring = self.restoring.load(Ordering::Relaxed);
        if !self.model_loaded.load(Ordering::Relaxed) {
            Some("no model loaded".into())
        } else if restoring > 0 {
            Some(format!("restoring {restoring} partitions"))
        } else if self.partitions() == 0 {
            Some("no partitions assigned".into())
        } else {
            None
        }
    }
}
