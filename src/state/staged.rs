//! The batches staged and not yet written, and per key the value the last
//! of them set: what later batches read before the store
//! (ARCHITECTURE.md §2).
//!
//! The index holds no key of its own. Each entry names a change in a
//! staged batch by its sequence number and position, with the key's hash;
//! looking a key up compares it with the change's key where it lies.
//! Copying every key of every batch into a map, and freeing it at the
//! commit, was a tenth of the scoring thread's time (bench/RESULTS.md,
//! session 11).

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::{Change, Family};

/// A staged change: batch `seq`'s change number `at`, whose key hashes to
/// `hash`.
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    seq: u64,
    at: usize,
}

#[derive(Default)]
pub(super) struct StagedValues {
    /// Per family, the change that last set each key.
    index: [HashTable<Slot>; Family::ALL.len()],
    /// The staged batches' changes, shared with their `Staged` (so that
    /// staging copies no value).
    batches: FxHashMap<u64, Arc<Vec<Change>>>,
}

fn hash_of(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// Whether `slot` names a change to `key` in `batches`.
fn names(batches: &FxHashMap<u64, Arc<Vec<Change>>>, slot: &Slot, hash: u64, key: &[u8]) -> bool {
    slot.hash == hash
        && batches
            .get(&slot.seq)
            .and_then(|changes| changes.get(slot.at))
            .is_some_and(|change| change.key == key)
}

impl StagedValues {
    /// The value a staged batch set `key` to last, if one did
    /// (`Some(None)`: deleted).
    pub(super) fn value(&self, family: Family, key: &[u8]) -> Option<Option<&[u8]>> {
        let hash = hash_of(key);
        let slot =
            self.index[family.index()].find(hash, |slot| names(&self.batches, slot, hash, key))?;
        Some(self.batches.get(&slot.seq)?.get(slot.at)?.value.as_deref())
    }

    /// Stages batch `seq`: its values shadow those of the batches before it.
    pub(super) fn insert(&mut self, seq: u64, changes: Arc<Vec<Change>>) {
        for (at, change) in changes.iter().enumerate() {
            let hash = hash_of(&change.key);
            let slot = Slot { hash, seq, at };
            let index = &mut self.index[change.family.index()];
            // The new batch is not in `batches` yet: a key it sets twice is
            // found by position in `changes`.
            let found = index.find_mut(hash, |s| {
                s.hash == hash
                    && match s.seq == seq {
                        true => changes[s.at].key == change.key,
                        false => names(&self.batches, s, hash, &change.key),
                    }
            });
            match found {
                Some(existing) => *existing = slot,
                None => {
                    index.insert_unique(hash, slot, |s| s.hash);
                }
            }
        }
        self.batches.insert(seq, changes);
    }

    /// Forgets batches `seqs` once they are written: each key one of them
    /// set last goes back to the store (a later batch's value stays until
    /// that batch is written). One pass over the index, not a lookup of
    /// every change: a commit forgets most of what the index holds, and
    /// the lookups were a tenth of the commit (bench/RESULTS.md, session
    /// 16).
    pub(super) fn remove(&mut self, seqs: &[u64]) {
        for index in &mut self.index {
            index.retain(|slot| !seqs.contains(&slot.seq));
        }
        for seq in seqs {
            self.batches.remove(seq);
        }
    }

    /// Forgets every staged value whose key `drop` picks, in any batch.
    pub(super) fn forget(&mut self, mut drop: impl FnMut(Family, &[u8]) -> bool) {
        let batches = &self.batches;
        for family in Family::ALL {
            self.index[family.index()].retain(|slot| {
                let key = batches
                    .get(&slot.seq)
                    .and_then(|changes| changes.get(slot.at))
                    .map(|change| change.key.as_slice());
                key.is_some_and(|key| !drop(family, key))
            });
        }
    }

    /// The sequence numbers of the batches staged and not yet written.
    pub(super) fn batches(&self) -> impl Iterator<Item = u64> + '_ {
        self.batches.keys().copied()
    }

    /// How many keys staged batches set and no store holds yet.
    pub(super) fn len(&self) -> usize {
        self.index.iter().map(HashTable::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::change;
    use super::*;

    #[test]
    fn the_latest_batch_shadows_and_a_removal_uncovers_only_its_own_keys() {
        let mut staged = StagedValues::default();
        staged.insert(
            0,
            Arc::new(vec![change("a", Some("1")), change("b", Some("1"))]),
        );
        // A key set twice in one batch: the later change is its value.
        staged.insert(1, Arc::new(vec![change("a", Some("2")), change("a", None)]));
        assert_eq!(staged.value(Family::Windows, b"a"), Some(None));
        assert_eq!(staged.value(Family::Windows, b"b"), Some(Some(&b"1"[..])));
        assert_eq!(staged.value(Family::Offsets, b"a"), None, "per family");
        assert_eq!(staged.len(), 2);

        staged.remove(&[0]);
        assert_eq!(staged.value(Family::Windows, b"a"), Some(None), "batch 1's");
        assert_eq!(staged.value(Family::Windows, b"b"), None, "written");
        staged.remove(&[1]);
        assert_eq!(staged.len(), 0);
        assert_eq!(staged.batches().count(), 0);
    }

    #[test]
    fn forgotten_keys_read_from_the_store_again() {
        let mut staged = StagedValues::default();
        staged.insert(
            0,
            Arc::new(vec![change("p1-a", Some("1")), change("p2-a", Some("1"))]),
        );
        staged.forget(|_, key| key.starts_with(b"p1"));
        assert_eq!(staged.value(Family::Windows, b"p1-a"), None);
        assert_eq!(
            staged.value(Family::Windows, b"p2-a"),
            Some(Some(&b"1"[..]))
        );
        staged.remove(&[0]);
        assert_eq!(staged.len(), 0);
    }
}
