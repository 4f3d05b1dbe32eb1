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
    /// The source's revocation count ([`Assignment::revocations`]) under
    /// which every record here was fetched: a partition revoked after it
    /// is not this batch's to score, even if it has come back since.
    pub fetched_under: u64,
}

impl Batch {
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            records: Vec::new(),
            fetched_under: 0,
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
    /// How many rebalances revoked partitions, and per partition the count
    /// at its last revocation: records fetched before a partition's
    /// revocation are stale even when it comes back to this instance
    /// (librdkafka then fetches them again from the committed offset).
    revoked: RwLock<Revocations>,
    /// Partitions with records still to read, as the consumer's last
    /// statistics said (`None` before the first: every partition may be
    /// behind). Such a partition is behind, not idle, however far its
    /// event time lags (a backlog the broker serves unevenly).
    backlogged: RwLock<Option<(BTreeSet<i32>, std::time::Instant)>>,
}

/// The partitions held now (`None` before the first assignment: all),
/// and those revoked since a given revocation count.
#[derive(Debug)]
pub struct HeldSince {
    held: Option<BTreeSet<i32>>,
    revoked: BTreeSet<i32>,
}

impl HeldSince {
    /// Whether a record of `partition` is still this instance's to score:
    /// the partition is held and was not revoked in between.
    pub fn holds(&self, partition: i32) -> bool {
        let held = self
            .held
            .as_ref()
            .is_none_or(|partitions| partitions.contains(&partition));
        held && !self.revoked(partition)
    }

    /// Whether `partition` was revoked in between.
    pub fn revoked(&self, partition: i32) -> bool {
        self.revoked.contains(&partition)
    }
}

#[derive(Debug, Default)]
struct Revocations {
    count: u64,
    last: BTreeMap<i32, u64>,
}

impl Assignment {
    /// How many rebalances have revoked partitions so far.
    pub fn revocations(&self) -> u64 {
        self.revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count
    }

    /// What is held now for records fetched under revocation count
    /// `since`: taken once a batch, then asked per record.
    pub fn held_since(&self, since: u64) -> HeldSince {
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last
            .iter()
            .filter(|&(_, &at)| at > since)
            .map(|(&partition, _)| partition)
            .collect();
        HeldSince {
            held: self.current(),
            revoked,
        }
    }

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
        let removed: Vec<i32> = remove
            .iter()
            .copied()
            .filter(|p| !add.contains(p))
            .collect();
        if !removed.is_empty() {
            let mut revoked = self
                .revoked
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            revoked.count += 1;
            let count = revoked.count;
            for p in removed {
                revoked.last.insert(p, count);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch fetched before partition 2 was revoked holds stale records
    /// of it even once 2 is given back (in a CI run of 055e354 such a
    /// batch folded records ahead of those before them); a batch fetched
    /// after holds fresh ones.
    #[test]
    fn a_partition_given_back_is_not_held_for_records_fetched_before() {
        let assignment = Assignment::default();
        assert!(assignment.held_since(0).holds(2), "before any assignment");
        assignment.change(&[0, 1, 2], &[]);
        let before = assignment.revocations();
        assert!(assignment.held_since(before).holds(2));
        // An eager rebalance: everything revoked, then the same given back.
        assignment.change(&[], &[0, 1, 2]);
        assert!(!assignment.held_since(before).holds(2), "revoked");
        assignment.change(&[0, 1, 2], &[]);
        assert!(
            !assignment.held_since(before).holds(2),
            "given back, still stale"
        );
        let after = assignment.revocations();
        assert!(
            assignment.held_since(after).holds(2),
            "fetched after: fresh"
        );
        // A follower's reassignment that keeps 0 and lets 1 go revokes 1
        // only.
        assignment.change(&[0, 2], &[1]);
        assert!(assignment.held_since(after).holds(0));
        assert!(!assignment.held_since(after).holds(1));
    }
}
