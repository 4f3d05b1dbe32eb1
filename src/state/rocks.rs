//! The RocksDB store: one database per instance, a column family per
//! [`Family`]. Built without compression codecs (see Cargo.toml).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use super::{Change, Entry, Family, StateError, Store};

/// Decides, at compaction, which window entries no event can need again, so
/// that keys never seen again (a card that stopped paying) do not pile up.
pub trait Expiry: Send + Sync {
    fn expired(&self, key: &[u8], value: &[u8]) -> bool;
}

/// Said with every failure of the store itself.
const WHAT_TO_DO: &str = "Check the disk under it (free space, permissions) and restart; if \
     RocksDB reports corruption, move the directory aside and restart: the instance then starts \
     with empty window state (`streamscore state warm` refills it)";

pub struct RocksStore {
    db: DB,
    path: String,
    /// Fsync the write-ahead log on every checkpoint, so that state and
    /// offsets survive a machine crash, not only a process crash.
    sync: bool,
}

impl fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RocksStore {
    /// Opens (or creates) the database at `path`; each family in
    /// `expiries` drops at compaction what its expiry says is done with.
    pub fn open(
        path: &Path,
        sync: bool,
        expiries: &[(Family, Arc<dyn Expiry>)],
    ) -> Result<Self, StateError> {
        let shown = path.display().to_string();
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // State is small numbers under many keys: modest memtables keep the
        // resident size flat (the issue asks under 256 MB for 1M cards).
        options.set_write_buffer_size(16 << 20);
        options.set_max_write_buffer_number(2);
        // The offsets family takes a few bytes a batch and would never fill
        // a memtable, so its write-ahead log (shared by every family) would
        // never be freed: the soak bench saw 690 MB on disk after 2M
        // events. Past this size, the families holding the oldest log are
        // flushed.
        options.set_max_total_wal_size(64 << 20);
        // Most reads are point reads, many of keys not stored yet (a card's
        // first event): a Bloom filter answers those without touching the
        // files. One block cache for every family.
        let cache = Cache::new_lru_cache(32 << 20);
        let families = Family::ALL.map(|family| {
            let mut family_options = Options::default();
            family_options.set_write_buffer_size(16 << 20);
            // The same for the memtables: a key not in one (most of a
            // batch's, once the memtable holding them was flushed) is
            // answered by a Bloom filter of whole keys instead of a search
            // of its skip list, which was the largest part of a batch's
            // reads in a profile (bench/RESULTS.md, session 11).
            family_options.set_memtable_whole_key_filtering(true);
            family_options.set_memtable_prefix_bloom_ratio(0.05);
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            table.set_block_cache(&cache);
            table.set_cache_index_and_filter_blocks(true);
            family_options.set_block_based_table_factory(&table);
            if let Some((_, expiry)) = expiries.iter().find(|(f, _)| *f == family) {
                let expiry = Arc::clone(expiry);
                family_options.set_compaction_filter(
                    "streamscore-expiry",
                    move |_level: u32, key: &[u8], value: &[u8]| {
                        if expiry.expired(key, value) {
                            Decision::Remove
                        } else {
                            Decision::Keep
                        }
                    },
                );
            }
            ColumnFamilyDescriptor::new(family.name(), family_options)
        });
        let db =
            DB::open_cf_descriptors(&options, path, families).map_err(|e| StateError::Store {
                path: shown.clone(),
                message: format!("cannot open: {e}. {WHAT_TO_DO}"),
            })?;
        Ok(Self {
            db,
            path: shown,
            sync,
        })
    }

    /// Opens the database at `path` for reading only, beside the instance
    /// that writes it (a snapshot as of the open).
    pub fn open_read_only(path: &Path) -> Result<Self, StateError> {
        let shown = path.display().to_string();
        let error = |e: rocksdb::Error| StateError::Store {
            path: shown.clone(),
            message: format!("cannot open: {e}"),
        };
        // Said plainly, rather than as RocksDB's missing-CURRENT-file error.
        if !path.join("CURRENT").exists() {
            return Err(StateError::Store {
                path: shown,
                message: "no state store here yet: has `streamscore run` run with this \
                          pipeline (or is --state elsewhere)?"
                    .into(),
            });
        }
        let options = Options::default();
        let families = DB::list_cf(&options, path).map_err(error)?;
        let db = DB::open_cf_for_read_only(&options, path, families, false).map_err(error)?;
        Ok(Self {
            db,
            path: shown,
            sync: false,
        })
    }

    fn family(&self, family: Family) -> Result<&rocksdb::ColumnFamily, StateError> {
        self.db
            .cf_handle(family.name())
            .ok_or_else(|| self.error(format!("column family {} is missing", family.name())))
    }

    /// A failure of the store itself: the one state error that stops an
    /// instance, so it says what to do.
    fn error(&self, message: String) -> StateError {
        StateError::Store {
            path: self.path.clone(),
            message: format!("{message}. {WHAT_TO_DO}"),
        }
    }
}

impl Store for RocksStore {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db
            .get_cf(self.family(family)?, key)
            .map_err(|e| self.error(format!("read failed: {e}")))
    }

    fn read_many(
        &self,
        family: Family,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> Result<(), StateError> {
        // Keys in order (the windows' prefetch sorts them) need no sort by
        // RocksDB.
        let sorted = keys.is_sorted();
        let values =
            self.db
                .batched_multi_get_cf(self.family(family)?, keys.iter().copied(), sorted);
        for (i, value) in values.into_iter().enumerate() {
            let value = value.map_err(|e| self.error(format!("read failed: {e}")))?;
            read(i, value.as_deref());
        }
        Ok(())
    }

    fn write(&self, changes: &[&Change]) -> Result<(), StateError> {
        // Sized once: a commit is thousands of keys, and the batch's buffer
        // grew by copying itself (bench/RESULTS.md, session 13). A record
        // is its key and value behind at most 16 bytes (its kind, family
        // and two lengths); the batch's header is 12 (sequence and count).
        const RECORD: usize = 16;
        const HEADER: usize = 12;
        let bytes: usize = changes
            .iter()
            .map(|c| c.key.len() + c.value.as_ref().map_or(0, Vec::len) + RECORD)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(HEADER + bytes);
        for change in changes {
            let family = self.family(change.family)?;
            match &change.value {
                Some(value) => batch.put_cf(family, &change.key, value),
                None => batch.delete_cf(family, &change.key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.error(format!("write failed: {e}")))
    }

    fn scan_prefix(&self, family: Family, prefix: &[u8]) -> Result<Vec<Entry>, StateError> {
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut entries = Vec::new();
        for entry in self.db.iterator_cf(self.family(family)?, mode) {
            let (k, v) = entry.map_err(|e| self.error(format!("scan failed: {e}")))?;
            if !k.starts_with(prefix) {
                break;
            }
            entries.push((k.to_vec(), v.to_vec()));
        }
        Ok(entries)
    }

    fn scan(&self, family: Family) -> Result<Vec<Entry>, StateError> {
        self.db
            .iterator_cf(self.family(family)?, IteratorMode::Start)
            .map(|entry| {
                entry
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.error(format!("scan failed: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expires every key starting with `x`.
    struct ExpireX;

    impl Expiry for ExpireX {
        fn expired(&self, key: &[u8], _value: &[u8]) -> bool {
            key.first() == Some(&b'x')
        }
    }

    fn expire_x() -> [(Family, Arc<dyn Expiry>); 1] {
        [(Family::Windows, Arc::new(ExpireX))]
    }

    fn put(key: &str, value: &str) -> Change {
        Change {
            family: Family::Windows,
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn writes_survive_a_reopen_and_compaction_drops_expired_keys() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Store {
            path: "temp".into(),
            message: e.to_string(),
        })?;
        {
            let store = RocksStore::open(dir.path(), true, &expire_x())?;
            store.write(&[&put("a", "1"), &put("xa", "2")])?;
            store.write(&[&Change {
                value: None,
                ..put("a", "")
            }])?;
            store.write(&[&put("b", "3")])?;
        }
        let store = RocksStore::open(dir.path(), true, &expire_x())?;
        assert_eq!(store.get(Family::Windows, b"a")?, None);
        assert_eq!(store.get(Family::Windows, b"b")?, Some(b"3".to_vec()));
        assert_eq!(store.scan(Family::Windows)?.len(), 2);
        let windows = store.family(Family::Windows)?;
        store
            .db
            .compact_range_cf(windows, None::<&[u8]>, None::<&[u8]>);
        assert_eq!(
            store.scan(Family::Windows)?,
            vec![(b"b".to_vec(), b"3".to_vec())]
        );
        assert!(
            RocksStore::open(dir.path(), true, &[])
                .unwrap_err()
                .to_string()
                .contains("cannot open"),
            "a second opener is refused while the first holds the lock"
        );
        Ok(())
    }
}
