//! The clients' contexts: the consumer logs partition assignment (so an
//! operator can see state follow partitions between instances) and keeps
//! readiness; both turn librdkafka's statistics into metrics.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;

use crate::batch::Assignment;
use crate::telemetry::{Health, Stats, kafka_stats};

pub struct SourceContext {
    pub health: Arc<Health>,
    pub stats: Arc<Stats>,
    pub assignment: Arc<Assignment>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        kafka_stats::record_consumer(&statistics, &self.stats);
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions: Vec<String> = list
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                self.health.change_partitions(partitions.len(), 0);
                let numbers: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                self.assignment.change(&numbers, &[]);
                tracing::info!(partitions = %partitions.join(","), "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                self.health.change_partitions(0, list.count());
                let numbers: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                self.assignment.change(&[], &numbers);
                tracing::info!(count = list.count(), "partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

pub struct SinkContext;

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        kafka_stats::record_producer(&statistics);
    }
}
