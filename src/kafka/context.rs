//! The clients' contexts: the consumer logs partition assignment (so an
//! operator can see state follow partitions between instances) and keeps
//! readiness; both turn librdkafka's statistics into metrics.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;

use crate::telemetry::{Health, Stats, kafka_stats};

pub struct SourceContext {
    pub health: Arc<Health>,
    pub stats: Arc<Stats>,
    pub assignment: Arc<Assignment>,
}

/// The input partitions this instance holds now, as rebalances say; drift
/// monitoring waits for each of them before it judges a window.
#[derive(Debug, Default)]
pub struct Assignment {
    partitions: RwLock<Option<BTreeSet<i32>>>,
}

impl Assignment {
    /// `None` until the first assignment.
    pub fn current(&self) -> Option<BTreeSet<i32>> {
        self.partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn change(&self, add: &[i32], remove: &[i32]) {
        let mut partitions = self
            .partitions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let set = partitions.get_or_insert_with(BTreeSet::new);
        set.extend(add);
        for p in remove {
            set.remove(p);
        }
    }
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
