//! librdkafka's statistics (every `statistics.interval.ms`) as gauges:
//! consumer lag per partition, the producer's queue and its retries.

use rdkafka::statistics::Statistics;

use super::{Stats, names};

/// The consumer's view: lag per assigned partition, and their total for the
/// status line.
pub fn record_consumer(statistics: &Statistics, stats: &Stats) {
    // Stays unknown (-1) until some partition's lag is known.
    let mut total = -1;
    for (topic, t) in &statistics.topics {
        // Partition -1 is librdkafka's internal "unassigned" queue, and a
        // lag of -1 means not known yet (nothing committed or no end offset).
        for (partition, p) in t.partitions.iter().filter(|(id, _)| **id >= 0) {
            if p.consumer_lag < 0 {
                continue;
            }
            total = total.max(0) + p.consumer_lag;
            metrics::gauge!(names::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                .set(p.consumer_lag as f64);
        }
    }
    stats.set_consumer_lag(total);
}

/// The partitions (of the one topic a source reads) whose end lies past
/// what the consumer has handed out to the engine: records still to read.
/// Before anything was handed out from a partition, reading starts at its
/// committed offset, or at its start for a new group. A partition whose
/// end is not known yet is not counted.
pub fn backlogged(statistics: &Statistics) -> std::collections::BTreeSet<i32> {
    statistics
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|(id, p)| {
            let next = [p.app_offset, p.committed_offset, p.lo_offset]
                .into_iter()
                .find(|&offset| offset >= 0);
            **id >= 0 && next.is_some_and(|next| p.hi_offset > next)
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The producer's view: messages waiting in its queue and the produce
/// requests librdkafka retried.
pub fn record_producer(statistics: &Statistics) {
    metrics::gauge!(names::PRODUCER_QUEUE).set(statistics.msg_cnt as f64);
    let retries: u64 = statistics.brokers.values().map(|b| b.txretries).sum();
    metrics::counter!(names::PRODUCER_RETRIES).absolute(retries);
}
