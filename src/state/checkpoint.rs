//! State and position move together (ARCHITECTURE.md §2):
//!
//! 1. a batch is processed against the state as of the batch before it,
//!    whose changes may still be [`Staged`] here rather than written;
//! 2. its outputs are produced and acknowledged;
//! 3. [`Checkpoint::commit`] writes its state changes and, per input
//!    partition, the next offset to read, in one atomic write;
//! 4. only then are its Kafka offsets stored.
//!
//! A record below the partition's folded offset is already in the state
//! (its outputs were acknowledged before step 3), so it is skipped, not
//! folded twice. Consumption thus resumes, in effect, from the later of
//! Kafka's commit and the store's offset.

use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::changelog::Replica;
use super::staged::StagedValues;
use super::{Change, Family, StateError, Store, offset_key, parse_offset_key};

pub struct Checkpoint {
    pub(super) store: Arc<dyn Store>,
    /// The changelog every commit is copied to first, when state follows
    /// its partitions between instances.
    pub(super) replica: Option<Replica>,
    pending: Mutex<Pending>,
    /// Held for a whole commit, so commits never overlap; see [`Written`].
    pub(super) written: Mutex<Written>,
}

/// Keys a batch wrote while an older batch was still unwritten, with the
/// writing batch's sequence number. The transactions and the labels topics
/// commit on their own clocks, so a labels batch staged after a
/// transactions batch can be written first; the older batch must then not
/// write its (older) value of a key they share over the newer one. At
/// a342126 it did, and the label was lost, its offset already stored.
#[derive(Default)]
pub(super) struct Written {
    /// Per family, each key a batch wrote while an older one was still
    /// staged, and that batch's sequence number. Per family so that a
    /// lookup borrows the change's key: the commit asks for every change
    /// it merges, and a map keyed by (family, key) needed each key cloned.
    by_newer: [FxHashMap<Vec<u8>, u64>; Family::ALL.len()],
}

impl Written {
    fn is_empty(&self) -> bool {
        self.by_newer.iter().all(|keys| keys.is_empty())
    }

    /// Notes that batch `seq` wrote `change`'s key.
    fn note(&mut self, seq: u64, change: &Change) {
        self.by_newer[change.family.index()].insert(change.key.clone(), seq);
    }

    /// Whether a batch newer than `seq` has written `change`'s key.
    fn superseded(&self, seq: u64, change: &Change) -> bool {
        self.by_newer[change.family.index()]
            .get(change.key.as_slice())
            .is_some_and(|&by| by > seq)
    }

    /// Keeps only the entries a batch still unwritten, `oldest` or newer,
    /// needs: those of writers newer than it.
    fn keep_for(&mut self, oldest: Option<u64>) {
        for keys in &mut self.by_newer {
            keys.retain(|_, by| oldest.is_some_and(|oldest| *by > oldest));
        }
    }
}

/// What a commit did not write: the partitions revoked since the batches
/// were staged, whose state now belongs to another instance (or to a
/// restore). Their Kafka offsets must not be stored either, so that the
/// records are read and folded again by whoever holds them now.
#[derive(Debug, Default, PartialEq)]
pub struct Committed {
    pub revoked: std::collections::BTreeSet<i32>,
}

#[derive(Default)]
pub(super) struct Pending {
    next_seq: u64,
    /// Per partition, how many times it was revoked: a batch staged before
    /// a revocation is not written for that partition ([`Committed`]).
    pub(super) epochs: FxHashMap<i32, u64>,
    /// With a changelog, the partitions this instance holds (and has
    /// restored): a batch's changes to any other are not written, since
    /// their state is another instance's.
    pub(super) held: Arc<FxHashSet<i32>>,
    /// The batches staged and not yet written, and the values they set.
    pub(super) staged: StagedValues,
    /// Per topic and partition, the first offset not folded into state
    /// (staged or written).
    pub(super) folded: HashMap<(String, i32), i64>,
}

/// A processed batch's state changes and offsets, waiting for its outputs'
/// acknowledgements before they are written.
#[derive(Debug)]
#[must_use = "staged state is lost unless committed"]
pub struct Staged {
    pub(super) seq: u64,
    pub(super) changes: Arc<Vec<Change>>,
    /// The partitions' revocation counts when staged (with a changelog).
    pub(super) epochs: FxHashMap<i32, u64>,
    /// The partitions held when staged (with a changelog).
    pub(super) held: Arc<FxHashSet<i32>>,
}

/// Delivered batches whose staged state waits to be written together:
/// due once `interval` has passed since the first of them, or once they
/// hold [`Unwritten::MAX_CHANGES`] changes (each holds its keys' values
/// until written, so memory stays bounded too). Zero interval: every batch.
#[derive(Debug)]
pub struct Unwritten {
    interval: Duration,
    staged: Vec<Staged>,
    /// Changes held by `staged`.
    changes: usize,
    since: Option<Instant>,
}

impl Unwritten {
    /// Tens of MB of held values at most, at a few hundred bytes each: at
    /// 200,000 the soak bench's resident memory rose from 90 MB (writing
    /// every batch) to 250 MB with 1M cards. At 100,000 rather than 50,000
    /// a commit writes each busy key once for twice as many batches, and
    /// more of a batch's reads find their keys staged: the engine took 6%
    /// less CPU end to end, for 25-30 MB more resident in the soak
    /// (bench/RESULTS.md, session 14).
    pub const MAX_CHANGES: usize = 100_000;

    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            staged: Vec::new(),
            changes: 0,
            since: None,
        }
    }

    /// Adds a delivered batch (`None`: a batch of a pipeline without state,
    /// which still waits for the offsets' sake).
    pub fn push(&mut self, staged: Option<Staged>) {
        self.changes += staged.as_ref().map_or(0, Staged::len);
        self.staged.extend(staged);
        self.since.get_or_insert_with(Instant::now);
    }

    /// When it becomes due by time, if anything waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + self.interval)
    }

    pub fn is_due(&self) -> bool {
        self.deadline().is_some_and(|at| Instant::now() >= at) || self.changes >= Self::MAX_CHANGES
    }

    /// Everything waiting, in batch order, for [`Checkpoint::commit_all`].
    pub fn take(&mut self) -> Vec<Staged> {
        self.changes = 0;
        self.since = None;
        std::mem::take(&mut self.staged)
    }
}

impl Staged {
    /// How many keys the batch changed, offsets included.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// Reads the store's offsets: where each partition's folded records end.
    pub fn new(store: Arc<dyn Store>) -> Result<Self, StateError> {
        let mut folded = HashMap::new();
        for (key, value) in store.scan(Family::Offsets)? {
            // A damaged offset is dropped: its partition's records are then
            // folded again from Kafka's committed offset, as after a crash.
            let Some(position) = parse_offset_key(&key) else {
                super::quarantined(Family::Offsets, None, "an unreadable offset key");
                continue;
            };
            let Ok(next) = value.as_slice().try_into().map(i64::from_be_bytes) else {
                super::quarantined(
                    Family::Offsets,
                    Some(position.1),
                    "an offset is not 8 bytes",
                );
                continue;
            };
            folded.insert(position, next);
        }
        Ok(Self {
            store,
            replica: None,
            pending: Mutex::new(Pending {
                folded,
                ..Pending::default()
            }),
            written: Mutex::default(),
        })
    }

    pub(super) fn pending(&self) -> MutexGuard<'_, Pending> {
        // Every update below completes before the lock is released.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store underneath, for reads of what is committed.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The value as of the last staged batch.
    pub fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(value) = self.pending().staged.value(family, key) {
            return Ok(value.map(<[u8]>::to_vec));
        }
        self.store.get(family, key)
    }

    /// Hands the value of each of `keys` as of the last staged batch to
    /// `read` (by its index in `keys`), borrowed: from the staged batches
    /// where they have it (under their lock), else from the store in one
    /// batch.
    pub fn read_many(
        &self,
        family: Family,
        keys: &[&[u8]],
        mut read: impl FnMut(usize, Option<&[u8]>),
    ) -> Result<(), StateError> {
        let mut unstaged = Vec::new();
        {
            let pending = self.pending();
            for (i, key) in keys.iter().enumerate() {
                match pending.staged.value(family, key) {
                    Some(value) => read(i, value),
                    None => unstaged.push(i),
                }
            }
        }
        if !unstaged.is_empty() {
            // In key order, as RocksDB reads them best; only the keys it
            // reads are sorted (most of a busy batch's are staged).
            unstaged.sort_unstable_by_key(|&i| keys[i]);
            let wanted: Vec<&[u8]> = unstaged.iter().map(|&i| keys[i]).collect();
            self.store
                .read_many(family, &wanted, &mut |at, value| read(unstaged[at], value))?;
        }
        Ok(())
    }

    /// The values of `keys` as of the last staged batch, copied.
    pub fn get_many(
        &self,
        family: Family,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let mut values = vec![None; keys.len()];
        self.read_many(family, keys, |i, value| {
            values[i] = value.map(<[u8]>::to_vec)
        })?;
        Ok(values)
    }

    /// Per partition of `topic`, the first offset not yet folded into state.
    pub fn folded_until(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.pending()
            .folded
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, partition), next)| (*partition, *next))
            .collect()
    }

    /// Forgets how far `partition` of `topic` was folded, in the store too:
    /// its records are then all new. For a topic recreated since (its end
    /// lies below the stored offset), whose records would otherwise all be
    /// taken as read again and never folded.
    pub fn forget_folded(&self, topic: &str, partition: i32) -> Result<(), StateError> {
        self.store.write(&[&Change {
            family: Family::Offsets,
            key: offset_key(topic, partition),
            value: None,
        }])?;
        self.pending().folded.remove(&(topic.to_owned(), partition));
        Ok(())
    }

    /// Holds a processed batch's changes, which later batches then read, and
    /// moves each partition's folded offset to `next_offsets`.
    pub fn stage(
        &self,
        topic: &str,
        next_offsets: &BTreeMap<i32, i64>,
        mut changes: Vec<Change>,
    ) -> Staged {
        let mut pending = self.pending();
        let seq = pending.next_seq;
        pending.next_seq += 1;
        for (&partition, &next) in next_offsets {
            let folded = pending
                .folded
                .entry((topic.to_owned(), partition))
                .or_insert(next);
            *folded = (*folded).max(next);
            changes.push(Change {
                family: Family::Offsets,
                key: offset_key(topic, partition),
                value: Some(folded.to_be_bytes().to_vec()),
            });
        }
        // In key order, for the commit's merge of batches (and RocksDB's
        // memtable, which inserts a key near the last one). A stable sort:
        // the windows' changes come sorted, so it only merges the runs, and
        // a key changed twice keeps its last value last.
        changes.sort_by(|a, b| (a.family, &a.key).cmp(&(b.family, &b.key)));
        let changes = Arc::new(changes);
        pending.staged.insert(seq, Arc::clone(&changes));
        let (epochs, held) = match self.replica {
            Some(_) => (pending.epochs.clone(), Arc::clone(&pending.held)),
            None => Default::default(),
        };
        Staged {
            seq,
            changes,
            epochs,
            held,
        }
    }

    /// Writes a staged batch's changes and offsets in one atomic write. Call
    /// in batch order, once the batch's outputs are acknowledged.
    pub fn commit(&self, staged: Staged) -> Result<Committed, StateError> {
        self.commit_all(vec![staged])
    }

    /// Writes several staged batches (in batch order) in one atomic write:
    /// each key once, at its latest value, unless a newer batch already
    /// wrote it (see [`Written`]).
    pub fn commit_all(&self, staged: Vec<Staged>) -> Result<Committed, StateError> {
        let Some(newest) = staged.iter().map(|s| s.seq).max() else {
            return Ok(Committed::default());
        };
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let merged: Vec<(u64, &Change)> = match staged.as_slice() {
            // The common case (one batch, nothing written out of order): its
            // changes as they are, without a map.
            [one] if written.is_empty() => {
                one.changes.iter().map(|change| (one.seq, change)).collect()
            }
            many => latest_changes(many, &written),
        };
        let revoked = self.revoked_since_staged(&staged);
        let merged: Vec<(u64, &Change)> = match &self.replica {
            Some(replica) if !revoked.is_empty() => merged
                .into_iter()
                .filter(|(seq, change)| !revoked.contains(&(*seq, replica.partition(change))))
                .collect(),
            _ => merged,
        };
        let positions = self.append_to_changelog(&merged)?;
        let mut writes: Vec<&Change> = merged.iter().map(|(_, c)| *c).collect();
        writes.extend(&positions);
        self.store.write(&writes)?;
        let committing: Vec<u64> = staged.iter().map(|s| s.seq).collect();
        let oldest_unwritten = self
            .pending()
            .staged
            .batches()
            .filter(|seq| !committing.contains(seq))
            .min();
        if oldest_unwritten.is_some_and(|oldest| oldest < newest) {
            for (seq, change) in &merged {
                written.note(*seq, change);
            }
        }
        // Only batches older than an entry's writer need it.
        written.keep_for(oldest_unwritten);
        // From the write above the store has each value; the staged index
        // gives it up only now, so a read between the two finds it in both.
        self.pending().staged.remove(&committing);
        Ok(Committed {
            revoked: revoked.into_iter().map(|(_, p)| p).collect(),
        })
    }

    /// Changes staged and not yet written (for tests and the status line).
    pub fn pending_keys(&self) -> usize {
        self.pending().staged.len()
    }
}

/// The changes of `staged` (in batch order), each key once at its latest
/// value and in key order, leaving out the keys a newer batch has already
/// written.
///
/// A merge of the batches, each in key order already ([`Checkpoint::stage`]
/// sorts them): no map of every key and no sort after it, which were a
/// third of the commit's own time (bench/RESULTS.md, session 12).
fn latest_changes<'s>(staged: &'s [Staged], written: &Written) -> Vec<(u64, &'s Change)> {
    let mut merged = Vec::with_capacity(staged.iter().map(Staged::len).sum());
    let mut heads: BinaryHeap<Head<'s>> = (0..staged.len())
        .filter_map(|batch| Head::at(staged, batch, 0))
        .collect();
    // The top is the smallest key, from the newest batch that changed it.
    // It is replaced in place by its batch's next change (one sift down,
    // rather than a pop and a push: the heap's comparisons of keys were
    // most of the merge's time).
    // Not `while let`: its scrutinee would hold `heads` borrowed through
    // the body, where the older heads are advanced too.
    loop {
        let Some(top) = heads.peek_mut() else {
            break;
        };
        let (batch, change) = (top.batch, top.change);
        advance(staged, top);
        let newest = (change.family, change.key.as_slice());
        // Older batches' changes to the same key are superseded.
        while let Some(older) = heads.peek_mut() {
            if older.key() != newest {
                break;
            }
            advance(staged, older);
        }
        let seq = staged[batch].seq;
        if !written.superseded(seq, change) {
            merged.push((seq, change));
        }
    }
    merged
}

/// Moves a head of the merge to its batch's next change in place (one
/// sift down), or drops it at the batch's end.
fn advance<'s>(staged: &'s [Staged], mut head: PeekMut<'_, Head<'s>>) {
    match Head::at(staged, head.batch, head.at + 1) {
        Some(next) => *head = next,
        None => {
            PeekMut::pop(head);
        }
    }
}

/// Where the merge of one staged batch has got to: its change at `at`, the
/// last of that key's if the batch changed it more than once.
struct Head<'s> {
    batch: usize,
    at: usize,
    change: &'s Change,
}

impl<'s> Head<'s> {
    fn at(staged: &'s [Staged], batch: usize, at: usize) -> Option<Self> {
        let changes = &staged[batch].changes;
        let first = changes.get(at)?;
        let repeats = changes[at + 1..]
            .iter()
            .take_while(|c| (c.family, &c.key) == (first.family, &first.key))
            .count();
        Some(Self {
            batch,
            at: at + repeats,
            change: &changes[at + repeats],
        })
    }

    fn key(&self) -> (Family, &[u8]) {
        (self.change.family, &self.change.key)
    }
}

/// Ordered for [`BinaryHeap`] (a max-heap) so that the greatest head is the
/// smallest key, and of equal keys the newest batch's.
impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .key()
            .cmp(&self.key())
            .then(self.batch.cmp(&other.batch))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Head<'_> {}

#[cfg(test)]
mod tests;
