//! Message records touched by the transaction being built: each is decoded once, changed in
//! memory by every request of the batch, and encoded once just before the commit.
//!
//! A broadcast acked by a thousand devices in one group commit is one JSON decode and one
//! encode instead of a thousand of each. Every write-side access to the `messages` table goes
//! through here ([`load`], [`save`], [`remove`], [`forget_app`]); readers use committed
//! snapshots and never see this cache.

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};

use super::records::MessageRecord;
use super::tables::{from_json, to_json, MESSAGES};
use super::StoreError;

/// The batch's view of message records, keyed by (app, message id).
#[derive(Default)]
pub(crate) struct MessageCache {
    slots: HashMap<(String, String), Slot>,
}

struct Slot {
    /// `None`: the record is known not to exist (or was removed in this batch).
    record: Option<MessageRecord>,
    dirty: bool,
}

impl MessageCache {
    /// Drops everything (after a failed commit: the table never saw these writes).
    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// Writes the changed records into the transaction and empties the cache.
    pub fn flush(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(MESSAGES)?;
        for ((app, id), slot) in self.slots.drain() {
            if let (true, Some(m)) = (slot.dirty, slot.record) {
                table.insert(
                    (app.as_str(), id.as_str()),
                    to_json("messages", &m)?.as_slice(),
                )?;
            }
        }
        Ok(())
    }
}

/// The record as this batch sees it.
pub(crate) fn load(
    txn: &WriteTransaction,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
) -> Result<Option<MessageRecord>, StoreError> {
    let key = (app.to_owned(), id.to_owned());
    if let Some(slot) = cache.slots.get(&key) {
        return Ok(slot.record.clone());
    }
    let record = {
        let table = txn.open_table(MESSAGES)?;
        let value = table.get((app, id))?;
        value
            .map(|v| from_json("messages", v.value()))
            .transpose()?
    };
    cache.slots.insert(
        key,
        Slot {
            record: record.clone(),
            dirty: false,
        },
    );
    Ok(record)
}

/// Replaces the record; it reaches the table when the batch commits.
pub(crate) fn save(cache: &mut MessageCache, app: &str, m: MessageRecord) {
    cache.slots.insert(
        (app.to_owned(), m.id.clone()),
        Slot {
            record: Some(m),
            dirty: true,
        },
    );
}

/// Deletes the record now, and any change to it this batch still held.
pub(crate) fn remove(
    txn: &WriteTransaction,
    cache: &mut MessageCache,
    app: &str,
    id: &str,
) -> Result<(), StoreError> {
    cache.slots.insert(
        (app.to_owned(), id.to_owned()),
        Slot {
            record: None,
            dirty: false,
        },
    );
    txn.open_table(MESSAGES)?.remove((app, id))?;
    Ok(())
}

/// Forgets every record of an app held by this batch (the app's rows are being deleted).
pub(crate) fn forget_app(cache: &mut MessageCache, app: &str) {
    cache.slots.retain(|(a, _), _| a != app);
}
