//! Counters of what the pipeline did: metric names live here, and the same
//! numbers are kept in atomics for the demo's progress line and summary.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::Batch;
use crate::kafka::sink::Delivered;
use crate::output::BatchOutput;

pub mod names {
    pub const CONSUMED: &str = "streamscore_events_consumed_total";
    pub const SCORED: &str = "streamscore_events_scored_total";
    pub const FLAGGED: &str = "streamscore_events_flagged_total";
    pub const DEAD_LETTERED: &str = "streamscore_events_dead_lettered_total";
    pub const BATCHES: &str = "streamscore_batches_total";
}

#[derive(Debug, Default)]
pub struct Stats {
    consumed: AtomicU64,
    scored: AtomicU64,
    flagged: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub consumed: u64,
    pub scored: u64,
    pub flagged: u64,
    pub dead_lettered: u64,
    pub batches: u64,
}

impl Stats {
    /// Counts a delivered batch, once per batch rather than per row.
    pub fn record(&self, batch: &Batch, output: &BatchOutput, delivered: Delivered) {
        let rerouted = delivered.scores_rerouted;
        let counts = [
            (&self.consumed, names::CONSUMED, batch.len()),
            (&self.scored, names::SCORED, output.scores.len() - rerouted),
            (&self.flagged, names::FLAGGED, output.flagged),
            (
                &self.dead_lettered,
                names::DEAD_LETTERED,
                output.dead_letters.len() + rerouted,
            ),
            (&self.batches, names::BATCHES, 1),
        ];
        for (atomic, name, n) in counts {
            atomic.fetch_add(n as u64, Ordering::Relaxed);
            metrics::counter!(name, "topic" => batch.topic.clone()).increment(n as u64);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            consumed: self.consumed.load(Ordering::Relaxed),
            scored: self.scored.load(Ordering::Relaxed),
            flagged: self.flagged.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}
