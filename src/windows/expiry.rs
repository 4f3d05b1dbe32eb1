//! Which stored window keys no in-order event can need again, for the
//! RocksDB compaction filter: a key whose newest tile is a whole retention
//! behind the newest tile its partition has seen.

use std::collections::HashMap;
use std::sync::RwLock;

use super::tiles::Tiles;
use crate::state::Expiry;

/// Input partition, series, key value: a partition's state is one key
/// range, so it can follow its partition to another instance. Written into
/// `key`, a buffer reused from one lookup to the next.
pub(super) fn set_state_key(key: &mut Vec<u8>, partition: i32, series: &[u8; 8], value: &str) {
    key.clear();
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(series);
    key.extend_from_slice(value.as_bytes());
}

/// The input partition a state key carries (-1 for `scope = "instance"`).
pub fn partition_of_key(key: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(key.get(..4)?.try_into().ok()?))
}

#[derive(Debug)]
pub(super) struct WindowExpiry {
    /// Per series id, how many tiles back its features reach, and its tile
    /// span (ms).
    retention: HashMap<[u8; 8], (i64, i64)>,
    /// Per input partition, the newest event time seen (ms).
    watermarks: RwLock<HashMap<i32, i64>>,
}

impl WindowExpiry {
    pub(super) fn new(retention: HashMap<[u8; 8], (i64, i64)>) -> Self {
        Self {
            retention,
            watermarks: RwLock::default(),
        }
    }

    pub(super) fn advance(&self, seen: &HashMap<i32, i64>) {
        let mut watermarks = self
            .watermarks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (&partition, &time) in seen {
            let w = watermarks.entry(partition).or_insert(time);
            *w = (*w).max(time);
        }
    }
}

impl Expiry for WindowExpiry {
    fn expired(&self, key: &[u8], value: &[u8]) -> bool {
        let (Some(partition), Some(series)) = (key.get(..4), key.get(4..12)) else {
            return false;
        };
        let partition = i32::from_be_bytes(partition.try_into().unwrap_or_default());
        let series: [u8; 8] = series.try_into().unwrap_or_default();
        // A series no longer declared keeps its state: the feature may come
        // back, and its keys are few compared with the live ones.
        let Some(&(retention, tile_ms)) = self.retention.get(&series) else {
            return false;
        };
        let Some(newest) = Tiles::newest_encoded(value) else {
            return false;
        };
        let watermarks = self
            .watermarks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watermarks
            .get(&partition)
            .is_some_and(|&watermark| newest <= watermark.div_euclid(tile_ms) - retention)
    }
}
