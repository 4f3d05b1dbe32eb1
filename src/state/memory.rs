//! The in-memory twin of the RocksDB store: `train` runs the window code
//! against it, and tests that need no disk use it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Address, Change, Entry, Family, StateError, Store};

#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<Address, Vec<u8>>>,
}

impl MemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<Address, Vec<u8>>> {
        // A panic elsewhere cannot leave a map half-written: every write
        // below is a single insert or remove.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries().get(&(family, key.to_vec())).cloned())
    }

    fn write(&self, changes: &[&Change]) -> Result<(), StateError> {
        let mut entries = self.entries();
        for change in changes {
            let key = (change.family, change.key.clone());
            match &change.value {
                Some(value) => entries.insert(key, value.clone()),
                None => entries.remove(&key),
            };
        }
        Ok(())
    }

    fn scan(&self, family: Family) -> Result<Vec<Entry>, StateError> {
        Ok(self
            .entries()
            .range((family, Vec::new())..)
            .take_while(|((f, _), _)| *f == family)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}
