//! Everything stateful (window features, label joins, drift windows) lives
//! in one store per instance, a family per kind, behind the [`Store`]
//! trait: RocksDB in the stream, an in-memory twin in `train` and in
//! tests. The [`Checkpoint`] on top of it writes a batch's state changes
//! and its input offsets together (ARCHITECTURE.md §2).

use std::fmt;

mod changelog;
mod checkpoint;
mod memory;
mod owners;
mod replica;
mod rocks;
mod staged;

pub use changelog::Position;
pub use changelog::{Changelog, PartitionOf, change_of_record, record_key};
pub use checkpoint::{Checkpoint, Committed, Staged, Unwritten};
pub use memory::MemoryStore;
pub use owners::Holder;
pub use rocks::{Expiry, RocksStore};

/// A kind of state: a RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Window-feature tiles, keyed by input partition, series and key value.
    Windows,
    /// Per input topic and partition, the next offset to read.
    Offsets,
    /// Each score by event id, for a while, for its label to find.
    Scores,
    /// Each label that found its score: by day, for the day's metrics.
    Outcomes,
    /// Drift windows' counts, alerts and hysteresis (src/drift/store.rs).
    Drift,
    /// Per input partition, the request API's address of the instance that
    /// holds it ([`owner_key`]): written to the changelog when a partition
    /// is taken over, read by the others' mirrors.
    Owners,
}

impl Family {
    /// In the order of their changelog family byte: append only.
    pub const ALL: [Family; 6] = [
        Family::Windows,
        Family::Offsets,
        Family::Scores,
        Family::Outcomes,
        Family::Drift,
        Family::Owners,
    ];

    /// Its position in [`Family::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Windows => "windows",
            Family::Offsets => "offsets",
            Family::Scores => "scores",
            Family::Outcomes => "outcomes",
            Family::Drift => "drift",
            Family::Owners => "owners",
        }
    }
}

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A family and a key: where a value lives.
pub type Address = (Family, Vec<u8>);

/// One key set (`Some`) or deleted (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub family: Family,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A window key set to `value` (`None`: deleted), for the state's tests.
#[cfg(test)]
pub(crate) fn change(key: &str, value: Option<&str>) -> Change {
    Change {
        family: Family::Windows,
        key: key.as_bytes().to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {message}")]
    Store { path: String, message: String },
    #[error("state changelog {topic}: {message}")]
    Changelog { topic: String, message: String },
}

/// A stored value that does not read (README "Hostile data"): it is
/// counted under `streamscore_state_damaged_total{family}`, said in a WARN
/// once per family and partition in this process, and then read as absent,
/// so that its key starts afresh and the next write replaces it. Only the
/// store's own errors ([`StateError::Store`]) stop an engine: a damaged
/// value that stopped it would stop every restart the same way.
pub fn quarantined(family: Family, partition: Option<i32>, reason: &str) {
    use crate::telemetry::events::{Event, StateDamaged};
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    type Said = Mutex<HashSet<(Family, Option<i32>)>>;
    static SAID: OnceLock<Said> = OnceLock::new();
    let first = SAID
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert((family, partition));
    StateDamaged {
        family: family.name(),
        partition,
        reason,
        first,
    }
    .emit();
}

/// Durable key-value state. Writes are atomic: all of a batch's changes
/// land, or none do.
pub trait Store: Send + Sync + fmt::Debug {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Hands the value of each of many keys (by its index in `keys`) to
    /// `read`, borrowed rather than copied: RocksDB reads them in one batch,
    /// and the window session decodes them straight from its blocks.
    fn read_many(
        &self,
        family: Family,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> Result<(), StateError> {
        for (i, key) in keys.iter().enumerate() {
            read(i, self.get(family, key)?.as_deref());
        }
        Ok(())
    }
    /// The values of many keys at once, copied.
    fn get_many(&self, family: Family, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let mut values = vec![None; keys.len()];
        self.read_many(family, keys, &mut |i, value| {
            values[i] = value.map(<[u8]>::to_vec)
        })?;
        Ok(values)
    }
    fn write(&self, changes: &[&Change]) -> Result<(), StateError>;
    /// Every key and value of a family, in key order.
    fn scan(&self, family: Family) -> Result<Vec<Entry>, StateError>;
    /// The keys starting with `prefix` and their values, in key order.
    fn scan_prefix(&self, family: Family, prefix: &[u8]) -> Result<Vec<Entry>, StateError> {
        Ok(self
            .scan(family)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
    }
}

/// The key under [`Family::Offsets`] of a topic's partition.
pub fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = topic.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The key under [`Family::Owners`] of an input partition.
pub fn owner_key(partition: i32) -> Vec<u8> {
    partition.to_be_bytes().to_vec()
}

/// The input partition of an owner key.
pub fn partition_of_owner_key(key: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(key.try_into().ok()?))
}

/// The topic and partition of an offset key.
fn parse_offset_key(key: &[u8]) -> Option<(String, i32)> {
    let split = key.len().checked_sub(5)?;
    let (topic, rest) = key.split_at(split);
    let partition = i32::from_be_bytes(rest[1..].try_into().ok()?);
    Some((String::from_utf8(topic.to_vec()).ok()?, partition))
}
