//! The clients' contexts: the consumer logs partition assignment (so an
//! operator can see state follow partitions between instances), keeps
//! readiness and tells what follows the assignment (the state's restore,
//! the labels consumer); both turn librdkafka's statistics into metrics.

use std::collections::BTreeSet;
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
    /// Told of each change, in order, from the consumer's rebalance
    /// callback: before the first record of an assigned partition is
    /// handed out, and before a revoked one goes to another member.
    pub followers: Vec<Arc<dyn FollowsAssignment>>,
}

/// What must move with the input's partitions.
pub trait FollowsAssignment: Send + Sync {
    /// `added` were assigned; `held` is every partition held now.
    fn assigned(&self, held: &BTreeSet<i32>, added: &[i32]);
    /// `removed` were revoked; `held` is what remains.
    fn revoked(&self, held: &BTreeSet<i32>, removed: &[i32]);
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        kafka_stats::record_consumer(&statistics, &self.stats);
        self.assignment
            .set_backlogged(kafka_stats::backlogged(&statistics));
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
                let held = self.assignment.current().unwrap_or_default();
                for follower in &self.followers {
                    follower.assigned(&held, &numbers);
                }
            }
            Rebalance::Revoke(list) => {
                self.health.change_partitions(0, list.count());
                let numbers: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                self.assignment.change(&[], &numbers);
                tracing::info!(count = list.count(), "partitions revoked");
                let held = self.assignment.current().unwrap_or_default();
                for follower in &self.followers {
                    follower.revoked(&held, &numbers);
                }
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
