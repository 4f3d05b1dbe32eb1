//! The changelog: a copy of every committed state change on a compacted
//! Kafka topic, one partition per input partition, so that a partition's
//! state can follow it to another instance (ARCHITECTURE.md §2, "State
//! that follows its partitions"). This file holds what the checkpoint needs
//! to know of it; the Kafka side is `kafka/changelog.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::{Change, Family, StateError, parse_offset_key};

/// Where committed changes are copied before the local store writes them.
pub trait Changelog: Send + Sync + fmt::Debug {
    /// The topic; the store keeps, per partition, how far it has been
    /// applied under [`Family::Offsets`], as it does for the input.
    fn topic(&self) -> &str;
    /// Appends each change to its partition's log and waits for every
    /// acknowledgement. Returns, per partition written, the next offset.
    fn append(&self, changes: &[(i32, &Change)]) -> Result<BTreeMap<i32, i64>, StateError>;
}

/// Which input partition a stored key belongs to; `None` for the keys of
/// the whole topic (drift judgements, kept with partition 0, whose holder
/// judges). Each room that writes keys knows their layout; the engine puts
/// them together (`engine/state.rs`).
pub type PartitionOf = fn(Family, &[u8]) -> Option<i32>;

/// The partition whose log carries a key's changes.
pub fn log_partition(partition_of: PartitionOf, family: Family, key: &[u8]) -> i32 {
    let owner = match family {
        Family::Offsets => super::parse_offset_key(key).map(|(_, partition)| partition),
        _ => partition_of(family, key),
    };
    owner.filter(|p| *p >= 0).unwrap_or(0)
}

/// A changelog record's key: the family, then the store's key.
pub fn record_key(change: &Change) -> Vec<u8> {
    let mut key = Vec::with_capacity(change.key.len() + 1);
    key.push(change.family.index() as u8);
    key.extend_from_slice(&change.key);
    key
}

/// The change a changelog record carries; `None` for a key this version
/// does not know (it is quarantined by the caller, never applied).
pub fn change_of_record(key: &[u8], value: Option<&[u8]>) -> Option<Change> {
    let (&family, key) = key.split_first()?;
    let family = *Family::ALL.get(usize::from(family))?;
    Some(Change {
        family,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    })
}

/// The changelog and how keys map to its partitions.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) log: Arc<dyn Changelog>,
    pub(super) partition_of: PartitionOf,
}

impl Replica {
    pub(super) fn partition(&self, change: &Change) -> i32 {
        log_partition(self.partition_of, change.family, &change.key)
    }

    /// Whether `change` is the store's own record of how far the changelog
    /// was applied, which stays local.
    pub(super) fn is_position(&self, change: &Change) -> bool {
        change.family == Family::Offsets
            && parse_offset_key(&change.key)
                .is_some_and(|(topic, _)| self.is_position_topic(&topic))
    }

    /// Whether offsets under `topic` are the store's positions in the
    /// changelog (the restore's or the mirror's).
    pub(super) fn is_position_topic(&self, topic: &str) -> bool {
        [Position::Restore, Position::Mirror]
            .iter()
            .any(|p| topic == self.position_topic(*p))
    }

    /// The topic name the store's `position` is kept under.
    pub(super) fn position_topic(&self, position: Position) -> String {
        match position {
            Position::Restore => self.log.topic().to_owned(),
            Position::Mirror => format!("{}.mirror", self.log.topic()),
        }
    }
}

/// The store's two positions in each changelog partition: how far every
/// change was applied (a restore's, and a standby's), and how far the
/// mirror has copied the keys read across partitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Position {
    Restore,
    Mirror,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_the_family_and_read_back() {
        let change = Change {
            family: Family::Drift,
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
        };
        let key = record_key(&change);
        assert_eq!(change_of_record(&key, Some(b"v")), Some(change));
        assert_eq!(change_of_record(&[200, 1], None), None, "an unknown family");
        assert_eq!(change_of_record(&[], None), None);
    }

    #[test]
    fn offsets_go_to_their_partition_and_topic_wide_keys_to_zero() {
        fn none(_: Family, _: &[u8]) -> Option<i32> {
            None
        }
        fn first_byte(_: Family, key: &[u8]) -> Option<i32> {
            key.first().map(|b| i32::from(*b))
        }
        let offset = super::super::offset_key("tx", 3);
        assert_eq!(log_partition(none, Family::Offsets, &offset), 3);
        assert_eq!(log_partition(none, Family::Drift, b"alert"), 0);
        assert_eq!(log_partition(first_byte, Family::Windows, &[2]), 2);
    }
}
