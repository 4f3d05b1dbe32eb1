//! The checkpoint's side of state that follows its partitions
//! (ARCHITECTURE.md §2, "State that follows its partitions"): the
//! changelog every commit is copied to first, the store's positions in it,
//! the partitions held, revoked, restored and mirrored. The commit itself
//! is `checkpoint.rs`; the Kafka side is `kafka/changelog.rs`.

use std::sync::Arc;

use rustc_hash::FxHashSet;

use super::changelog::{Changelog, PartitionOf, Position, Replica, log_partition};
use super::checkpoint::{Checkpoint, Staged};
use super::{Change, Family, StateError, offset_key, parse_offset_key};

impl Checkpoint {
    /// Copies every commit to `log` before the store writes it, each key to
    /// the partition `partition_of` gives it.
    pub fn with_changelog(mut self, log: Arc<dyn Changelog>, partition_of: PartitionOf) -> Self {
        self.replica = Some(Replica { log, partition_of });
        self
    }

    /// The changelog, when there is one.
    pub(super) fn changelog(&self) -> Option<&Arc<dyn Changelog>> {
        self.replica.as_ref().map(|r| &r.log)
    }

    /// The changelog's topic, when there is one.
    pub fn changelog_topic(&self) -> Option<&str> {
        self.replica.as_ref().map(|r| r.log.topic())
    }

    /// How far the changelog's `partition` has been applied to the store.
    pub fn changelog_position(&self, partition: i32) -> Result<Option<i64>, StateError> {
        self.position(Position::Restore, partition)
    }

    /// How far the store holds what the mirror copies of `partition`: the
    /// mirror's own position, or the restore's where that is further
    /// (everything below it was applied: by a restore, a standby, or this
    /// instance's own commits while it held the partition). A mirror that
    /// started a partition just let go at its own older position would
    /// write the log's older values over the newer ones this instance
    /// folded, and features summed over partitions would read them.
    pub fn mirrored_until(&self, partition: i32) -> Result<Option<i64>, StateError> {
        Ok(self
            .position(Position::Mirror, partition)?
            .max(self.position(Position::Restore, partition)?))
    }

    /// The store's `position` in the changelog's `partition`.
    pub fn position(&self, position: Position, partition: i32) -> Result<Option<i64>, StateError> {
        let Some(key) = self.position_key(position, partition) else {
            return Ok(None);
        };
        let stored = self.store.get(Family::Offsets, &key)?;
        Ok(stored.and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes)))
    }

    fn position_key(&self, position: Position, partition: i32) -> Option<Vec<u8>> {
        let replica = self.replica.as_ref()?;
        Some(offset_key(&replica.position_topic(position), partition))
    }

    /// Writes changes copied from the changelog's `partition`, with the
    /// store's `position` in it moved to `next`; the caller holds
    /// `written`, so no commit or hold comes between.
    fn write_copied(
        &self,
        position: Position,
        partition: i32,
        next: i64,
        changes: Vec<Change>,
    ) -> Result<(), StateError> {
        let Some(key) = self.position_key(position, partition) else {
            return Ok(());
        };
        let position = Change {
            family: Family::Offsets,
            key,
            value: Some(next.to_be_bytes().to_vec()),
        };
        let mut all: Vec<&Change> = changes.iter().collect();
        all.push(&position);
        self.store.write(&all)?;
        Ok(())
    }

    /// Forgets what this instance staged for `partitions`, which another
    /// instance (or a restore) now owns: staged batches are not written
    /// for them, and their folded offsets are read again after the restore
    /// ([`Checkpoint::restored`]). Without a changelog the local store is
    /// the only copy, so nothing is forgotten.
    pub fn revoke(&self, partitions: &[i32]) {
        let Some(replica) = &self.replica else {
            return;
        };
        let mut pending = self.pending();
        for &partition in partitions {
            *pending.epochs.entry(partition).or_default() += 1;
        }
        let mut held = (*pending.held).clone();
        for partition in partitions {
            held.remove(partition);
        }
        pending.held = Arc::new(held);
        pending.staged.forget(|family, key| {
            partitions.contains(&log_partition(replica.partition_of, family, key))
        });
        pending.folded.retain(|(_, p), _| !partitions.contains(p));
    }

    /// Writes changes read from the changelog's `partition`, up to (not
    /// including) offset `next`, with that position.
    pub fn apply_restored(
        &self,
        partition: i32,
        next: i64,
        changes: Vec<Change>,
    ) -> Result<(), StateError> {
        let _no_commit_meanwhile = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.write_copied(Position::Restore, partition, next, changes)
    }

    /// Takes `partitions` as this instance's, before they are restored: the
    /// mirror ([`Checkpoint::apply_mirrored`]) then leaves them alone.
    pub fn hold(&self, partitions: &[i32]) {
        let _no_mirror_write_meanwhile = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut pending = self.pending();
        let mut held = (*pending.held).clone();
        held.extend(partitions);
        pending.held = Arc::new(held);
    }

    /// Whether this instance holds `partition` (with a changelog).
    pub fn holds(&self, partition: i32) -> bool {
        self.pending().held.contains(&partition)
    }

    /// Writes changes another instance made to a partition this one does
    /// not hold (the keys read across partitions), up to offset `next` of
    /// its log; nothing, and `false`, when the partition is held by now.
    ///
    /// A standby copies every change, so it moves the restore's own
    /// position (`Position::Restore`): a later restore starts from it.
    pub fn apply_mirrored(
        &self,
        position: Position,
        partition: i32,
        next: i64,
        changes: Vec<Change>,
    ) -> Result<bool, StateError> {
        let _no_hold_meanwhile = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.holds(partition) {
            return Ok(false);
        }
        self.write_copied(position, partition, next, changes)?;
        Ok(true)
    }

    /// After a restore: the restored partitions' folded offsets (of the
    /// input and labels topics) are read from the store.
    pub fn restored(&self, partitions: &[i32]) -> Result<(), StateError> {
        let stored = self.store.scan(Family::Offsets)?;
        let mut pending = self.pending();
        for (key, value) in stored {
            let Some((topic, partition)) = parse_offset_key(&key) else {
                continue;
            };
            let position = self
                .replica
                .as_ref()
                .is_some_and(|r| r.is_position_topic(&topic));
            if !partitions.contains(&partition) || position {
                continue;
            }
            if let Ok(next) = value.as_slice().try_into().map(i64::from_be_bytes) {
                pending.folded.insert((topic, partition), next);
            }
        }
        Ok(())
    }

    /// Per staged batch, the partitions it may not write: revoked since it
    /// was staged, or not held when it was (records fetched before a
    /// rebalance and processed after it).
    pub(super) fn revoked_since_staged(&self, staged: &[Staged]) -> FxHashSet<(u64, i32)> {
        let Some(replica) = &self.replica else {
            return FxHashSet::default();
        };
        let pending = self.pending();
        let mut revoked = FxHashSet::default();
        for batch in staged {
            for (&partition, &now) in &pending.epochs {
                if batch.epochs.get(&partition).copied().unwrap_or(0) != now {
                    revoked.insert((batch.seq, partition));
                }
            }
            for change in batch.changes.iter() {
                let partition = replica.partition(change);
                if !batch.held.contains(&partition) && !replica.is_position(change) {
                    revoked.insert((batch.seq, partition));
                }
            }
        }
        revoked
    }

    /// Appends the changes to the changelog (ARCHITECTURE.md §2: the log
    /// first, so that what the store claims the changelog holds), and
    /// returns the store's new positions in it.
    pub(super) fn append_to_changelog(
        &self,
        merged: &[(u64, &Change)],
    ) -> Result<Vec<Change>, StateError> {
        let Some(replica) = &self.replica else {
            return Ok(Vec::new());
        };
        let routed: Vec<(i32, &Change)> = merged
            .iter()
            .filter(|(_, change)| !replica.is_position(change))
            .map(|(_, change)| (replica.partition(change), *change))
            .collect();
        if routed.is_empty() {
            return Ok(Vec::new());
        }
        let next = replica.log.append(&routed)?;
        Ok(next
            .into_iter()
            .map(|(partition, next)| Change {
                family: Family::Offsets,
                key: offset_key(replica.log.topic(), partition),
                value: Some(next.to_be_bytes().to_vec()),
            })
            .collect())
    }
}
