//! Values written lately, kept decoded-ready in memory for the batches
//! that read them next. A card seen in this second's batches is likely seen
//! again within seconds; without this, each such read searched RocksDB's
//! memtable skip list, a third of the window bench's time in a profile.
//!
//! Two generations bound the memory: once the newer one holds its share of
//! the budget it becomes the older one, and the older one is dropped. A key
//! read from neither falls through to the store, so the cache only ever
//! answers with what the store itself would.

use rustc_hash::FxHashMap;

#[derive(Debug)]
pub(super) struct Recent {
    newer: Generation,
    older: Generation,
    /// Bytes a generation may hold before it turns older.
    generation_bytes: usize,
}

#[derive(Debug, Default)]
struct Generation {
    values: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

/// What an entry costs beyond its key and value: the map's slot and the two
/// allocations' headers, roughly.
const ENTRY_OVERHEAD: usize = 64;

impl Recent {
    pub(super) fn new(budget_bytes: usize) -> Self {
        Self {
            newer: Generation::default(),
            older: Generation::default(),
            generation_bytes: budget_bytes / 2,
        }
    }

    /// The value last written under `key` (`Some(None)`: deleted), if
    /// remembered.
    pub(super) fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.newer
            .values
            .get(key)
            .or_else(|| self.older.values.get(key))
    }

    /// Forgets everything: after a rebalance, another instance may have
    /// written any of the keys since.
    pub(super) fn clear(&mut self) {
        self.newer = Generation::default();
        self.older = Generation::default();
    }

    pub(super) fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let cost = |key: &[u8], value: &Option<Vec<u8>>| {
            key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
        };
        let bytes = cost(&key, &value);
        if self.newer.bytes + bytes > self.generation_bytes {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.bytes += bytes;
        // A key is in one generation at most: a busy key, replaced in the
        // newer one, costs one lookup.
        if let Some(replaced) = self.newer.values.get_mut(&key) {
            self.newer.bytes -= cost(&key, replaced);
            *replaced = value;
            return;
        }
        // An older copy would shadow nothing (the newer generation is read
        // first) but would hold memory until its generation goes.
        self.older.values.remove(&key);
        self.newer.values.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_value_and_forgets_the_oldest_generation_past_its_budget() {
        let mut recent = Recent::new(4 * (ENTRY_OVERHEAD + 2));
        recent.insert(b"a".to_vec(), Some(b"1".to_vec()));
        recent.insert(b"a".to_vec(), Some(b"2".to_vec()));
        recent.insert(b"b".to_vec(), None);
        assert_eq!(recent.get(b"a"), Some(&Some(b"2".to_vec())));
        assert_eq!(recent.get(b"b"), Some(&None), "a deletion is remembered");
        // Generation of two entries: "c" starts a new one, "d" fills it,
        // "e" starts a third and the first ("a", "b") is forgotten.
        recent.insert(b"c".to_vec(), Some(b"3".to_vec()));
        assert_eq!(recent.get(b"a"), Some(&Some(b"2".to_vec())));
        recent.insert(b"d".to_vec(), Some(b"4".to_vec()));
        recent.insert(b"e".to_vec(), Some(b"5".to_vec()));
        assert_eq!(recent.get(b"a"), None);
        assert_eq!(recent.get(b"c"), Some(&Some(b"3".to_vec())));
        assert_eq!(recent.get(b"e"), Some(&Some(b"5".to_vec())));
    }
}
