//! The Kafka-to-score latency histogram, counted per batch.
//!
//! A histogram handle of the metrics crate keeps every sample until the
//! exporter drains it: one push per score. Measured with the recorder
//! installed (`STREAMSCORE_BENCH_RECORDER=1 cargo bench --bench score_path`),
//! that made the 1,000-row batch 6.4% slower. Here a batch's latencies are
//! counted into the buckets locally and added to one counter per bucket
//! (`handles.rs`), which Prometheus reads as a histogram (`_bucket{le}`,
//! `_count`, `_sum`): a few metric updates per batch whatever its size.

/// Upper bounds, in seconds.
const BOUNDS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
/// The `le` label of each bucket, the last one above every bound.
pub const BOUNDS_LE: [&str; 16] = [
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

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// Per bucket, how many values are at or below its bound, as
    /// Prometheus counts them.
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.per_bucket.iter().scan(0, |total, n| {
            *total += n;
            Some(*total)
        })
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
        let cumulative: Vec<u64> = counts.cumulative().collect();
        assert_eq!((cumulative[0], cumulative[1], cumulative[15]), (2, 3, 5));
    }
}
