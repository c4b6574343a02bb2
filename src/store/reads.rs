//! Read queries; each runs in its own read transaction, concurrently with the writer.

use bytes::Bytes;
use redb::ReadableDatabase;

use super::record_cache::CachedTable;
use super::records::{
    AppRecord, AuditRecord, CredentialRecord, DeviceRecord, MessageRecord, UserRecord,
};
use super::tables::{
    from_json, Cursor, MailboxEntry, StatsRow, APPS, APP_CREDENTIALS, AUDIT, BODIES, CONSOLE_USERS,
    CREDENTIALS, DEVICES, DEVICE_HOME, GAPS, LAST_SEEN, MAILBOX, MESSAGES, META, META_INITIALIZED,
    STATS, SUBSCRIPTIONS, TOPIC_COUNTS, TOPIC_LOG, USER_DEVICES,
};
use super::{Store, StoreError};

/// One pending message of a device, ready to send.
#[derive(Debug, Clone)]
pub struct PendingEntry {
    pub seq: u64,
    pub expires_at_ms: u64,
    pub frame: Bytes,
    /// The topic log it came from; `None` for the device's own mailbox.
    pub topic: Option<String>,
    pub message_id: String,
}

impl Store {
    /// Whether the first start already ran on this data dir.
    ///
    /// # Errors
    /// Storage errors.
    pub fn is_initialized(&self) -> Result<bool, StoreError> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(META)?.get(META_INITIALIZED)?.is_some())
    }

    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn app(&self, app: &str) -> Result<Option<AppRecord>, StoreError> {
        self.read_cached(&self.inner.records.apps, APPS, "apps", app)
    }

    /// Apps in name order after `after`, at most `limit`.
    ///
    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<AppRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(APPS)?;
        let mut out = Vec::new();
        for row in table.range(after.unwrap_or("")..)? {
            let (k, v) = row?;
            if Some(k.value()) == after {
                continue;
            }
            out.push(from_json("apps", v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        self.read_cached(
            &self.inner.records.credentials,
            CREDENTIALS,
            "credentials",
            id,
        )
    }

    /// A JSON record by key through its cache (see `record_cache.rs`). The generation is
    /// taken before the read transaction begins, so what that transaction reads is never
    /// tagged newer than it is.
    fn read_cached<T: Clone + serde::de::DeserializeOwned>(
        &self,
        cache: &CachedTable<T>,
        table: redb::TableDefinition<&str, &[u8]>,
        name: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let generation = self
            .inner
            .stats
            .record_commits
            .load(std::sync::atomic::Ordering::Acquire);
        if let Some(hit) = cache.get(key, generation) {
            return Ok(Some(hit));
        }
        let txn = self.db().begin_read()?;
        let value = txn.open_table(table)?.get(key)?;
        let record: Option<T> = value.map(|v| from_json(name, v.value())).transpose()?;
        if let Some(r) = &record {
            cache.put(key, generation, r);
        }
        Ok(record)
    }

    /// Every credential of an app (API keys and client keys).
    ///
    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn app_credentials(&self, app: &str) -> Result<Vec<CredentialRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let index = txn.open_table(APP_CREDENTIALS)?;
        let creds = txn.open_table(CREDENTIALS)?;
        let mut out = Vec::new();
        for row in index.range((app, "")..)? {
            let (k, ()) = (row?.0, ());
            let (a, id) = k.value();
            if a != app {
                break;
            }
            if let Some(v) = creds.get(id)? {
                out.push(from_json("credentials", v.value())?);
            }
        }
        Ok(out)
    }

    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn console_user(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(CONSOLE_USERS)?;
        let value = table.get(login)?;
        value
            .map(|v| from_json("console_users", v.value()))
            .transpose()
    }

    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn device(&self, app: &str, device: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let Some(mut d) = read_device(&txn, app, device)? else {
            return Ok(None);
        };
        with_last_seen(&txn.open_table(LAST_SEEN)?, &mut d)?;
        Ok(Some(d))
    }

    /// A device's record as stored, without looking up its last-seen time (its
    /// `last_seen_ms` may be older than [`Store::device`]'s): for the token check and the
    /// topics read on every connect, which do not need it.
    ///
    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn device_record(
        &self,
        app: &str,
        device: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        read_device(&self.db().begin_read()?, app, device)
    }

    /// The app a device belongs to; used only to check a device token.
    ///
    /// # Errors
    /// Storage errors.
    pub fn device_home(&self, device: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(DEVICE_HOME)?;
        let value = table.get(device)?;
        Ok(value.map(|v| v.value().to_owned()))
    }

    /// The devices bound to a user, in id order, at most `limit`.
    ///
    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn user_devices(
        &self,
        app: &str,
        user: &str,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let index = txn.open_table(USER_DEVICES)?;
        let devices = txn.open_table(DEVICES)?;
        let last_seen = txn.open_table(LAST_SEEN)?;
        let mut out = Vec::new();
        for row in index.range((app, user, "")..)? {
            let (k, ()) = (row?.0, ());
            let (a, u, id) = k.value();
            if a != app || u != user {
                break;
            }
            if let Some(v) = devices.get((app, id))? {
                let mut d: DeviceRecord = from_json("devices", v.value())?;
                with_last_seen(&last_seen, &mut d)?;
                out.push(d);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn message(&self, app: &str, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(MESSAGES)?;
        let value = table.get((app, id))?;
        value
            .map(|v| super::message_codec::decode(v.value()))
            .transpose()
    }

    /// Up to `limit` pending, unexpired messages of a device with `seq > after`, in seq
    /// order: its mailbox merged with each subscribed topic's log after the device's cursor.
    /// Fewer than `limit` means there is nothing more right now.
    ///
    /// # Errors
    /// Storage errors or a corrupt entry.
    pub fn pending_after(
        &self,
        app: &str,
        device: &str,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<PendingEntry>, StoreError> {
        let txn = self.db().begin_read()?;
        let mailbox = txn.open_table(MAILBOX)?;
        let topic_log = txn.open_table(TOPIC_LOG)?;
        let subs = txn.open_table(SUBSCRIPTIONS)?;
        let bodies = txn.open_table(BODIES)?;
        let mut out = Vec::new();
        // Adds an entry unless it expired or lost its body; says whether it was added.
        let add = |seq: u64,
                   bytes: &[u8],
                   topic: Option<&str>,
                   out: &mut Vec<PendingEntry>|
         -> Result<bool, StoreError> {
            let entry = MailboxEntry::decode(bytes)?;
            if entry.expires_at_ms <= now_ms {
                return Ok(false);
            }
            let Some(body) = bodies.get((app, seq))? else {
                return Ok(false);
            };
            out.push(PendingEntry {
                seq,
                expires_at_ms: entry.expires_at_ms,
                frame: Bytes::copy_from_slice(body.value()),
                topic: topic.map(str::to_owned),
                message_id: entry.message_id,
            });
            Ok(true)
        };
        let mut taken = 0;
        for row in mailbox.range((app, device, after.saturating_add(1))..)? {
            let (k, v) = row?;
            let (a, d, seq) = k.value();
            if a != app || d != device || taken >= limit {
                break;
            }
            taken += usize::from(add(seq, v.value(), None, &mut out)?);
        }
        for row in subs.range((app, device, "")..)? {
            let (k, v) = row?;
            let (a, d, topic) = k.value();
            if a != app || d != device {
                break;
            }
            let cursor = Cursor::decode(v.value())?;
            let start = after.max(cursor.acked).saturating_add(1);
            let mut taken = 0;
            for row in topic_log.range((app, topic, start)..)? {
                let (k, v) = row?;
                let (a, t, seq) = k.value();
                if a != app || t != topic || taken >= limit {
                    break;
                }
                taken += usize::from(add(seq, v.value(), Some(topic), &mut out)?);
            }
        }
        out.sort_unstable_by_key(|e| e.seq);
        out.truncate(limit);
        Ok(out)
    }

    /// How many messages the device's mailbox cap dropped that it has not been told about.
    ///
    /// # Errors
    /// Storage errors.
    pub fn gap(&self, app: &str, device: &str) -> Result<u64, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(GAPS)?;
        let value = table.get((app, device))?;
        Ok(value.map_or(0, |v| v.value()))
    }

    /// Per-minute statistics of an app for minutes in `[from, to)`.
    ///
    /// # Errors
    /// Storage errors or a corrupt row.
    pub fn stats(
        &self,
        app: &str,
        from_minute: u64,
        to_minute: u64,
    ) -> Result<Vec<(u64, StatsRow)>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(STATS)?;
        let mut out = Vec::new();
        for row in table.range((app, from_minute)..(app, to_minute))? {
            let (k, v) = row?;
            out.push((k.value().1, StatsRow::decode(v.value())?));
        }
        Ok(out)
    }

    /// Audit records, newest first, older than `before` (ms) when given, at most `limit`.
    ///
    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn audit_log(
        &self,
        before_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let end = before_ms.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for row in table.range(..(end, 0u64))?.rev() {
            let (_, v) = row?;
            out.push(from_json("audit", v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Subscribers of a topic (`$all`: devices of the app).
    ///
    /// # Errors
    /// Storage errors.
    pub fn topic_subscribers(&self, app: &str, topic: &str) -> Result<u64, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(TOPIC_COUNTS)?;
        let value = table.get((app, topic))?;
        Ok(value.map_or(0, |v| v.value()))
    }
}

fn read_device(
    txn: &redb::ReadTransaction,
    app: &str,
    device: &str,
) -> Result<Option<DeviceRecord>, StoreError> {
    let table = txn.open_table(DEVICES)?;
    let value = table.get((app, device))?;
    value.map(|v| from_json("devices", v.value())).transpose()
}

/// Takes a device's last-seen time from its own table where that is newer than the record's
/// (records written before that table existed carry the time themselves).
fn with_last_seen(
    table: &redb::ReadOnlyTable<(&'static str, &'static str), u64>,
    d: &mut DeviceRecord,
) -> Result<(), StoreError> {
    if let Some(at) = table.get((d.app.as_str(), d.id.as_str()))? {
        d.last_seen_ms = d.last_seen_ms.max(Some(at.value()));
    }
    Ok(())
}
