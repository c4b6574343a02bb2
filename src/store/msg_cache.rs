//! Message records touched by the transaction being built: each is decoded once, changed in
//! memory by every request of the batch, and encoded once just before the commit (in the binary form of
//! [`message_codec`](super::message_codec)).
//!
//! A broadcast acked by a thousand devices in one group commit is one decode and one
//! encode instead of a thousand of each. Every write-side access to the `messages` table goes
//! through here ([`load`], [`update`], [`save`], [`remove`], [`forget_app`], and
//! [`MessageCache::find`] with [`MessageCache::get`] / [`MessageCache::get_mut`] for a
//! caller that looks a record up once and touches it more than once); readers use committed
//! snapshots and never see this cache.
//!
//! Fan-out acks look up a record per delivered message, so a hit costs two hash lookups
//! (app, then id) with foldhash — seeded per map, so ids chosen by a client cannot aim at
//! one bucket — and allocates nothing.

use std::collections::HashMap;

use redb::ReadableTable;

use super::message_codec;
use super::open_tables::Tables;
use super::records::MessageRecord;
use super::StoreError;

type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// The batch's view of message records: an index by app then message id (looked up by
/// `&str`, so a hit allocates nothing) into the slots.
#[derive(Default)]
pub(crate) struct MessageCache {
    index: Map<String, Map<String, usize>>,
    slots: Vec<Slot>,
}

struct Slot {
    /// `None`: the record is known not to exist (or was removed in this batch).
    record: Option<MessageRecord>,
    dirty: bool,
}

impl MessageCache {
    /// Drops everything (after a failed commit: the table never saw these writes).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
    }

    /// Writes the changed records into the transaction and empties the cache.
    pub fn flush(&mut self, tables: &mut Tables<'_>) -> Result<(), StoreError> {
        if self.index.is_empty() {
            self.slots.clear();
            return Ok(());
        }
        let table = tables.messages()?;
        for (app, ids) in self.index.drain() {
            for (id, i) in ids {
                if let Some(Slot {
                    record: Some(m),
                    dirty: true,
                }) = self.slots.get(i)
                {
                    table.insert(
                        (app.as_str(), id.as_str()),
                        message_codec::encode(m).as_slice(),
                    )?;
                }
            }
        }
        self.slots.clear();
        Ok(())
    }

    /// The slot of a record, read from the table on first use in this batch.
    pub fn find(
        &mut self,
        tables: &mut Tables<'_>,
        app: &str,
        id: &str,
    ) -> Result<usize, StoreError> {
        if let Some(&i) = self.index.get(app).and_then(|ids| ids.get(id)) {
            return Ok(i);
        }
        let record = {
            let table = tables.messages()?;
            let value = table.get((app, id))?;
            value
                .map(|v| message_codec::decode(v.value()))
                .transpose()?
        };
        Ok(self.put(app, id.to_owned(), record, false))
    }

    /// The record in slot `i` (from [`Self::find`]), if there is one.
    pub fn get(&self, i: usize) -> Option<&MessageRecord> {
        self.slots.get(i).and_then(|s| s.record.as_ref())
    }

    /// The record in slot `i`, to change in place (written when the batch commits).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut MessageRecord> {
        let slot = self.slots.get_mut(i)?;
        let m = slot.record.as_mut()?;
        slot.dirty = true;
        Some(m)
    }

    fn put(&mut self, app: &str, id: String, record: Option<MessageRecord>, dirty: bool) -> usize {
        let ids = match self.index.get_mut(app) {
            Some(ids) => ids,
            // Sized for a busy batch, so it does not regrow in every commit.
            None => self.index.entry(app.to_owned()).or_insert_with(|| {
                HashMap::with_capacity_and_hasher(64, foldhash::quality::RandomState::default())
            }),
        };
        let slot = Slot { record, dirty };
        if let Some(&i) = ids.get(id.as_str()) {
            if let Some(s) = self.slots.get_mut(i) {
                *s = slot;
                return i;
            }
        }
        let i = self.slots.len();
        self.slots.push(slot);
        ids.insert(id, i);
        i
    }
}

/// The record as this batch sees it (a copy; see [`update`] to change it in place).
pub(crate) fn load(
    tables: &mut Tables<'_>,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
) -> Result<Option<MessageRecord>, StoreError> {
    let i = cache.find(tables, app, id)?;
    Ok(cache.get(i).cloned())
}

/// Changes the record in place (written when the batch commits); `None` if there is none.
pub(crate) fn update<R>(
    tables: &mut Tables<'_>,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
    f: impl FnOnce(&mut MessageRecord) -> R,
) -> Result<Option<R>, StoreError> {
    let i = cache.find(tables, app, id)?;
    Ok(cache.get_mut(i).map(f))
}

/// Replaces the record; it reaches the table when the batch commits.
pub(crate) fn save(cache: &mut MessageCache, app: &str, m: MessageRecord) {
    let id = m.id.clone();
    cache.put(app, id, Some(m), true);
}

/// Deletes the record now, and any change to it this batch still held.
pub(crate) fn remove(
    tables: &mut Tables<'_>,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
) -> Result<(), StoreError> {
    cache.put(app, id.to_owned(), None, false);
    tables.messages()?.remove((app, id))?;
    Ok(())
}

/// Forgets every record of an app held by this batch (the app's rows are being deleted).
/// Its slots stay until the batch ends, unreachable, so they are never written.
pub(crate) fn forget_app(cache: &mut MessageCache, app: &str) {
    cache.index.remove(app);
}
