//! The metric handles of one input topic, looked up once.
//!
//! `metrics::counter!(name, labels)` hashes the name and labels and looks the
//! series up in the recorder's registry on every call: about a microsecond
//! each, some twenty times a batch. A batch's metrics go through these
//! handles instead, registered when the topic's first batch is counted (by
//! then `streamscore run` has installed the recorder).

use metrics::{Counter, Gauge, Histogram};

use super::latency::{BOUNDS_LE, LatencyCounts};
use super::names;
use crate::reject::RejectKind;

pub struct TopicHandles {
    pub consumed: Counter,
    pub scored: Counter,
    pub flagged: Counter,
    pub batches: Counter,
    /// By [`RejectKind::index`].
    pub dead_lettered: Vec<Counter>,
    pub batch_rows: Histogram,
    pub batch_seconds: Histogram,
    latency_buckets: Vec<Counter>,
    latency_count: Counter,
    latency_sum: Gauge,
}

impl TopicHandles {
    pub fn register(topic: &str) -> Self {
        let counter = |name: &'static str| metrics::counter!(name, "topic" => topic.to_owned());
        Self {
            consumed: counter(names::CONSUMED),
            scored: counter(names::SCORED),
            flagged: counter(names::FLAGGED),
            batches: counter(names::BATCHES),
            dead_lettered: RejectKind::ALL
                .iter()
                .map(|kind| {
                    metrics::counter!(names::DEAD_LETTERED, "topic" => topic.to_owned(), "kind" => kind.as_str())
                })
                .collect(),
            batch_rows: metrics::histogram!(names::BATCH_ROWS, "topic" => topic.to_owned()),
            batch_seconds: metrics::histogram!(names::BATCH_SECONDS, "topic" => topic.to_owned()),
            latency_buckets: BOUNDS_LE
                .iter()
                .map(|le| {
                    metrics::counter!(names::KAFKA_TO_SCORE_SECONDS_BUCKET, "topic" => topic.to_owned(), "le" => *le)
                })
                .collect(),
            latency_count: counter(names::KAFKA_TO_SCORE_SECONDS_COUNT),
            latency_sum: metrics::gauge!(names::KAFKA_TO_SCORE_SECONDS_SUM, "topic" => topic.to_owned()),
        }
    }

    /// Adds a batch's latencies to the histogram's cumulative buckets.
    pub fn add_latencies(&self, counts: &LatencyCounts) {
        if counts.count() == 0 {
            return;
        }
        for (counter, cumulative) in self.latency_buckets.iter().zip(counts.cumulative()) {
            counter.increment(cumulative);
        }
        self.latency_count.increment(counts.count());
        self.latency_sum.increment(counts.sum_seconds());
    }
}
