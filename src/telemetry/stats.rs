//! Counters of what the pipeline did, emitted as metrics and kept in atomics
//! for the status line and the demo's progress line and summary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::handles::TopicHandles;
use super::latency::LatencyCounts;
use crate::reject::RejectKind;

/// At most this many batch times are kept between two status lines.
const MAX_BATCH_SAMPLES: usize = 100_000;

/// The event of a batch delivered, as [`Stats::record`] counts it (built by
/// the loop, `pipeline.rs`, which knows the batch, its output and its
/// delivery; telemetry imports none of them).
#[derive(Debug)]
pub struct BatchDelivered<'a> {
    pub topic: &'a str,
    /// Records consumed.
    pub consumed: usize,
    /// Scores delivered.
    pub scored: usize,
    pub flagged: usize,
    /// Dead letters by [`RejectKind::index`], those Kafka refused as scores
    /// counted as `undeliverable`.
    pub dead_letters: [u64; RejectKind::ALL.len()],
    /// Per delivered score, its record's Kafka timestamp (ms), if any.
    pub scores_sent_ms: Vec<Option<i64>>,
    /// From the batch's arrival to its delivery.
    pub elapsed: Duration,
}

pub struct Stats {
    consumed: AtomicU64,
    scored: AtomicU64,
    flagged: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    /// Labels folded from the labels topic.
    labels_folded: AtomicU64,
    /// Total consumer lag over the assigned partitions (-1: not known yet).
    consumer_lag: AtomicI64,
    /// Batch processing times since the status line last took them.
    batch_seconds: Mutex<Vec<f64>>,
    /// Metric handles by input topic.
    handles: Mutex<HashMap<String, Arc<TopicHandles>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::default(),
            scored: AtomicU64::default(),
            flagged: AtomicU64::default(),
            dead_lettered: AtomicU64::default(),
            batches: AtomicU64::default(),
            labels_folded: AtomicU64::default(),
            // Unknown until librdkafka's first statistics, not zero.
            consumer_lag: AtomicI64::new(-1),
            batch_seconds: Mutex::default(),
            handles: Mutex::default(),
        }
    }
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
    pub fn record(&self, batch: &BatchDelivered) {
        let dead_lettered: u64 = batch.dead_letters.iter().sum();
        for (atomic, n) in [
            (&self.consumed, batch.consumed as u64),
            (&self.scored, batch.scored as u64),
            (&self.flagged, batch.flagged as u64),
            (&self.dead_lettered, dead_lettered),
            (&self.batches, 1),
        ] {
            atomic.fetch_add(n, Ordering::Relaxed);
        }
        let seconds = batch.elapsed.as_secs_f64();
        if let Ok(mut samples) = self.batch_seconds.lock()
            && samples.len() < MAX_BATCH_SAMPLES
        {
            samples.push(seconds);
        }

        let Some(metrics) = self.handles(batch.topic) else {
            return;
        };
        metrics.consumed.increment(batch.consumed as u64);
        metrics.scored.increment(batch.scored as u64);
        metrics.flagged.increment(batch.flagged as u64);
        metrics.batches.increment(1);
        for (counter, &n) in metrics.dead_lettered.iter().zip(&batch.dead_letters) {
            if n > 0 {
                counter.increment(n);
            }
        }
        metrics.batch_rows.record(batch.consumed as f64);
        metrics.batch_seconds.record(seconds);

        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut latency = LatencyCounts::default();
        for sent_ms in &batch.scores_sent_ms {
            // A record without a timestamp still counts, with no latency.
            let sent_ms = sent_ms.unwrap_or(now_ms);
            latency.observe((now_ms - sent_ms).max(0) as f64 / 1000.0);
        }
        metrics.add_latencies(&latency);
    }

    /// The topic's metric handles, registered on its first batch.
    fn handles(&self, topic: &str) -> Option<Arc<TopicHandles>> {
        let mut handles = self.handles.lock().ok()?;
        if let Some(found) = handles.get(topic) {
            return Some(Arc::clone(found));
        }
        let registered = Arc::new(TopicHandles::register(topic));
        handles.insert(topic.to_owned(), Arc::clone(&registered));
        Some(registered)
    }

    /// Counts labels folded from the labels topic.
    pub fn record_labels(&self, folded: usize) {
        self.labels_folded
            .fetch_add(folded as u64, Ordering::Relaxed);
    }

    /// Labels folded from the labels topic since the start.
    pub fn labels_folded(&self) -> u64 {
        self.labels_folded.load(Ordering::Relaxed)
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
