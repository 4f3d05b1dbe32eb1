//! The Kafka-to-score latency histogram, counted per batch.
//!
//! A histogram handle of the metrics crate keeps every sample until the
//! exporter drains it: one push per score. Measured with the recorder
//! installed (`STREAMSCORE_BENCH_RECORDER=1 cargo bench --bench score_path`),
//! that made the 1,000-row batch 6.4% slower. Here a batch's latencies are
//! counted into the buckets locally and added to one counter per bucket,
//! which Prometheus reads as a histogram (`_bucket{le}`, `_count`, `_sum`):
//! a few metric updates per batch whatever its size.

use super::names::KAFKA_TO_SCORE_SECONDS;

/// Upper bounds, in seconds, and their `le` labels.
const BOUNDS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
const LE: [&str; 16] = [
    "0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10",
    "30", "60", "+Inf",
];

/// Counts of one batch's latencies, by bucket.
#[derive(Debug, Default, PartialEq)]
pub struct LatencyCounts {
    /// Per bucket (the last is above every bound), not cumulative.
    per_bucket: [u64; 16],
    sum_seconds: f64,
    count: u64,
}

impl LatencyCounts {
    pub fn observe(&mut self, seconds: f64) {
        let bucket = BOUNDS.partition_point(|&bound| bound < seconds);
        self.per_bucket[bucket] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// Adds the counts to the exported histogram of `topic`.
    pub fn emit(&self, topic: &str) {
        if self.count == 0 {
            return;
        }
        let mut cumulative = 0;
        for (le, n) in LE.iter().zip(self.per_bucket) {
            cumulative += n;
            if cumulative > 0 {
                metrics::counter!(format!("{KAFKA_TO_SCORE_SECONDS}_bucket"), "topic" => topic.to_owned(), "le" => *le)
                    .increment(cumulative);
            }
        }
        metrics::counter!(format!("{KAFKA_TO_SCORE_SECONDS}_count"), "topic" => topic.to_owned())
            .increment(self.count);
        metrics::gauge!(format!("{KAFKA_TO_SCORE_SECONDS}_sum"), "topic" => topic.to_owned())
            .increment(self.sum_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_bucket_of_their_upper_bound() {
        let mut counts = LatencyCounts::default();
        for seconds in [0.0005, 0.001, 0.0011, 0.03, 61.0] {
            counts.observe(seconds);
        }
        let mut expected = [0u64; 16];
        expected[0] = 2; // <= 0.001, the bound itself included
        expected[1] = 1; // <= 0.002
        expected[5] = 1; // <= 0.05
        expected[15] = 1; // above 60 s
        assert_eq!(counts.per_bucket, expected);
        assert_eq!(counts.count, 5);
    }
}
