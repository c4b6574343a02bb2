//! Message records touched by the transaction being built: each is decoded once, changed in
//! memory by every request of the batch, and encoded once just before the commit.
//!
//! A broadcast acked by a thousand devices in one group commit is one JSON decode and one
//! encode instead of a thousand of each. Every write-side access to the `messages` table goes
//! through here ([`load`], [`peek`], [`update`], [`save`], [`remove`], [`forget_app`]);
//! readers use committed snapshots and never see this cache.

use std::collections::HashMap;

use redb::ReadableTable;

use super::open_tables::Tables;
use super::records::MessageRecord;
use super::tables::{from_json, to_json};
use super::StoreError;

/// The batch's view of message records, by app then message id (looked up by `&str`, so a
/// hit allocates nothing).
#[derive(Default)]
pub(crate) struct MessageCache {
    apps: HashMap<String, HashMap<String, Slot>>,
}

struct Slot {
    /// `None`: the record is known not to exist (or was removed in this batch).
    record: Option<MessageRecord>,
    dirty: bool,
}

impl MessageCache {
    /// Drops everything (after a failed commit: the table never saw these writes).
    pub fn clear(&mut self) {
        self.apps.clear();
    }

    /// Writes the changed records into the transaction and empties the cache.
    pub fn flush(&mut self, tables: &mut Tables<'_>) -> Result<(), StoreError> {
        if self.apps.is_empty() {
            return Ok(());
        }
        let table = tables.messages()?;
        for (app, slots) in self.apps.drain() {
            for (id, slot) in slots {
                if let (true, Some(m)) = (slot.dirty, slot.record) {
                    table.insert(
                        (app.as_str(), id.as_str()),
                        to_json("messages", &m)?.as_slice(),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn slot(
        &mut self,
        tables: &mut Tables<'_>,
        app: &str,
        id: &str,
    ) -> Result<&mut Slot, StoreError> {
        if !self.apps.get(app).is_some_and(|s| s.contains_key(id)) {
            let record = {
                let table = tables.messages()?;
                let value = table.get((app, id))?;
                value
                    .map(|v| from_json("messages", v.value()))
                    .transpose()?
            };
            self.put(app, id.to_owned(), record, false);
        }
        self.apps
            .get_mut(app)
            .and_then(|s| s.get_mut(id))
            .ok_or(StoreError::CommitFailed)
    }

    fn put(&mut self, app: &str, id: String, record: Option<MessageRecord>, dirty: bool) {
        let slots = match self.apps.get_mut(app) {
            Some(slots) => slots,
            // Sized for a busy batch, so it does not regrow in every commit.
            None => self
                .apps
                .entry(app.to_owned())
                .or_insert_with(|| HashMap::with_capacity(64)),
        };
        slots.insert(id, Slot { record, dirty });
    }
}

/// The record as this batch sees it (a copy; see [`update`] to change it in place).
pub(crate) fn load(
    tables: &mut Tables<'_>,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
) -> Result<Option<MessageRecord>, StoreError> {
    Ok(cache.slot(tables, app, id)?.record.clone())
}

/// Reads the record without copying it: `f` sees it, or `None` if there is none.
pub(crate) fn peek<R>(
    tables: &mut Tables<'_>,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
    f: impl FnOnce(Option<&MessageRecord>) -> R,
) -> Result<R, StoreError> {
    Ok(f(cache.slot(tables, app, id)?.record.as_ref()))
}

/// Changes the record in place (written when the batch commits); `None` if there is none.
pub(crate) fn update<R>(
    tables: &mut Tables<'_>,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
    f: impl FnOnce(&mut MessageRecord) -> R,
) -> Result<Option<R>, StoreError> {
    let slot = cache.slot(tables, app, id)?;
    Ok(slot.record.as_mut().map(|m| {
        slot.dirty = true;
        f(m)
    }))
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
pub(crate) fn forget_app(cache: &mut MessageCache, app: &str) {
    cache.apps.remove(app);
}
