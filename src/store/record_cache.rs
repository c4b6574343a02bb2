//! Read-through caches of app and credential records for the request path, so that an API
//! call does not open a read transaction and decode JSON for each of them.
//!
//! Validity is a generation: the writer bumps [`WriterStats::record_commits`] after every
//! commit that may have changed an app or a credential, before it answers that commit's
//! requests. An entry is used only while the generation it was read under is still the
//! current one, and a reader takes the generation *before* its read transaction begins, so
//! an entry read from an older snapshot can never be tagged with a newer generation. A
//! revoked key or a suspended app is therefore refused from the first request after the
//! revoke or suspend is answered.
//!
//! [`WriterStats::record_commits`]: super::WriterStats::record_commits

use std::collections::HashMap;
use std::sync::RwLock;

use super::records::{AppRecord, CredentialRecord};

/// Most entries per table; a full table is emptied before the next insert (a bound, not an
/// eviction policy: deployments have far fewer apps and keys than this).
const MAX_ENTRIES: usize = 4096;

/// The cached tables.
#[derive(Default)]
pub(crate) struct RecordCache {
    pub apps: CachedTable<AppRecord>,
    pub credentials: CachedTable<CredentialRecord>,
}

/// Records by key, each with the generation it was read under.
pub(crate) struct CachedTable<T> {
    map: RwLock<HashMap<String, (u64, T)>>,
}

impl<T> Default for CachedTable<T> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<T: Clone> CachedTable<T> {
    /// The record under `key`, if it was read under `generation`.
    pub fn get(&self, key: &str, generation: u64) -> Option<T> {
        let map = self.map.read().ok()?;
        map.get(key)
            .filter(|(g, _)| *g == generation)
            .map(|(_, v)| v.clone())
    }

    /// Remembers a record read under `generation` (taken before the read began).
    pub fn put(&self, key: &str, generation: u64, value: &T) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.to_owned(), (generation, value.clone()));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_hold_only_for_their_generation() {
        let t = CachedTable::<u32>::default();
        t.put("a", 3, &7);
        assert_eq!(t.get("a", 3), Some(7));
        assert_eq!(t.get("a", 4), None, "a later generation must miss");
        assert_eq!(t.get("b", 3), None);
        t.put("a", 4, &8);
        assert_eq!(t.get("a", 4), Some(8));
        assert_eq!(t.get("a", 3), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let t = CachedTable::<usize>::default();
        for i in 0..(MAX_ENTRIES * 2 + 5) {
            t.put(&i.to_string(), 1, &i);
            assert!(t.len() <= MAX_ENTRIES);
        }
        // Re-inserting a present key at capacity keeps the rest.
        let before = t.len();
        let last = (MAX_ENTRIES * 2 + 4).to_string();
        t.put(&last, 1, &0);
        assert_eq!(t.len(), before);
    }
}
