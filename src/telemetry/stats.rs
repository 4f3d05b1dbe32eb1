//! Counters of what the pipeline did, emitted as metrics and kept in atomics
//! for the status line and the demo's progress line and summary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::latency::LatencyCounts;
use super::names;
use crate::batch::Batch;
use crate::kafka::sink::Delivered;
use crate::output::BatchOutput;

/// At most this many batch times are kept between two status lines.
const MAX_BATCH_SAMPLES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Stats {
    consumed: AtomicU64,
    scored: AtomicU64,
    flagged: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    /// Total consumer lag over the assigned partitions (-1: not known yet).
    consumer_lag: AtomicI64,
    /// Batch processing times since the status line last took them.
    batch_seconds: Mutex<Vec<f64>>,
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
    /// Counts a delivered batch, once per batch rather than per row, and
    /// observes each score's latency from its record's Kafka timestamp to
    /// now, when its acknowledgement has arrived.
    pub fn record(
        &self,
        batch: &Batch,
        output: &BatchOutput,
        delivered: &Delivered,
        elapsed: Duration,
    ) {
        let rerouted = delivered.rerouted.len();
        let topic = batch.topic.clone();
        let counts = [
            (&self.consumed, names::CONSUMED, batch.len()),
            (&self.scored, names::SCORED, output.scores.len() - rerouted),
            (&self.flagged, names::FLAGGED, output.flagged),
            (&self.batches, names::BATCHES, 1),
        ];
        for (atomic, name, n) in counts {
            atomic.fetch_add(n as u64, Ordering::Relaxed);
            metrics::counter!(name, "topic" => topic.clone()).increment(n as u64);
        }
        self.dead_lettered.fetch_add(
            (output.dead_letters.len() + rerouted) as u64,
            Ordering::Relaxed,
        );
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        for letter in &output.dead_letters {
            *by_kind.entry(letter.kind.as_str()).or_default() += 1;
        }
        if rerouted > 0 {
            *by_kind
                .entry(crate::reject::RejectKind::Undeliverable.as_str())
                .or_default() += rerouted as u64;
        }
        for (kind, n) in by_kind {
            metrics::counter!(names::DEAD_LETTERED, "topic" => topic.clone(), "kind" => kind)
                .increment(n);
        }

        metrics::histogram!(names::BATCH_ROWS, "topic" => topic.clone()).record(batch.len() as f64);
        let seconds = elapsed.as_secs_f64();
        metrics::histogram!(names::BATCH_SECONDS, "topic" => topic.clone()).record(seconds);
        if let Ok(mut samples) = self.batch_seconds.lock()
            && samples.len() < MAX_BATCH_SAMPLES
        {
            samples.push(seconds);
        }

        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut latency = LatencyCounts::default();
        for (position, score) in output.scores.iter().enumerate() {
            if delivered.rerouted.contains(&position) {
                continue;
            }
            // A record without a timestamp still counts, with no latency.
            let sent_ms = batch.records[score.source_index]
                .timestamp_ms
                .unwrap_or(now_ms);
            latency.observe((now_ms - sent_ms).max(0) as f64 / 1000.0);
        }
        latency.emit(&topic);
    }

    pub fn set_consumer_lag(&self, total: i64) {
        self.consumer_lag.store(total, Ordering::Relaxed);
    }

    /// Total lag over the assigned partitions, once librdkafka reported it.
    pub fn consumer_lag(&self) -> Option<i64> {
        Some(self.consumer_lag.load(Ordering::Relaxed)).filter(|&lag| lag >= 0)
    }

    /// The batch times recorded since the last call.
    pub fn take_batch_seconds(&self) -> Vec<f64> {
        self.batch_seconds
            .lock()
            .map(|mut samples| std::mem::take(&mut *samples))
            .unwrap_or_default()
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
