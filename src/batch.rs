//! A micro-batch of source records with its provenance: the commit step
//! needs to know exactly which offsets a batch covers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

/// One consumed message, detached from the consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The payload, or for a record too large to decode only the prefix a
    /// dead letter will carry: see [`SourceRecord::payload_size`].
    pub payload: Option<Vec<u8>>,
    /// The payload's size as sent, which `payload` may fall short of.
    pub payload_size: usize,
    /// The record's Kafka timestamp (ms since the epoch), when it has one.
    pub timestamp_ms: Option<i64>,
}

impl SourceRecord {
    /// A record kept whole.
    pub fn new(
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
    ) -> Self {
        Self {
            partition,
            offset,
            key,
            payload_size: payload.as_ref().map_or(0, Vec::len),
            payload,
            timestamp_ms: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub topic: String,
    pub records: Vec<SourceRecord>,
}

impl Batch {
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            records: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Per partition, the offset after this batch's last: where reading
    /// resumes once the batch is done.
    pub fn next_offsets(&self) -> BTreeMap<i32, i64> {
        self.offset_ranges()
            .into_iter()
            .map(|(partition, (_, last))| (partition, last + 1))
            .collect()
    }

    /// Per partition, the first and last offset in this batch.
    pub fn offset_ranges(&self) -> BTreeMap<i32, (i64, i64)> {
        let mut ranges = BTreeMap::new();
        for r in &self.records {
            ranges
                .entry(r.partition)
                .and_modify(|(lo, hi): &mut (i64, i64)| {
                    *lo = (*lo).min(r.offset);
                    *hi = (*hi).max(r.offset);
                })
                .or_insert((r.offset, r.offset));
        }
        ranges
    }
}

/// The input partitions this instance holds now, as rebalances say; drift
/// monitoring waits for each of them before it judges a window.
#[derive(Debug, Default)]
pub struct Assignment {
    partitions: RwLock<Option<BTreeSet<i32>>>,
    /// Partitions with records still to read, as the consumer's last
    /// statistics said (`None` before the first: every partition may be
    /// behind). Such a partition is behind, not idle, however far its
    /// event time lags (a backlog the broker serves unevenly).
    backlogged: RwLock<Option<(BTreeSet<i32>, std::time::Instant)>>,
}

impl Assignment {
    /// `None` until the first assignment.
    pub fn current(&self) -> Option<BTreeSet<i32>> {
        self.partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies a rebalance: `add` assigned, `remove` revoked.
    pub fn change(&self, add: &[i32], remove: &[i32]) {
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

    /// The partitions with records still to read (the consumer's
    /// statistics, every second).
    pub fn set_backlogged(&self, partitions: BTreeSet<i32>) {
        *self
            .backlogged
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((partitions, std::time::Instant::now()));
    }

    /// The partitions with records still to read and when that was seen;
    /// `None` until the consumer's first statistics.
    pub fn backlogged(&self) -> Option<(BTreeSet<i32>, std::time::Instant)> {
        self.backlogged
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
