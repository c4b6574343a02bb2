//! The on-disk format, in one place: every redb table, its key and value encodings, and the
//! schema version. Keys are typed tuples scoped by app; never concatenated strings.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | name | u64 (`schema_version`, `next_seq`, `initialized`) |
//! | `apps` | app | JSON [`AppRecord`](super::records::AppRecord) |
//! | `credentials` | credential id | JSON [`CredentialRecord`](super::records::CredentialRecord) |
//! | `app_credentials` | (app, credential id) | () |
//! | `console_users` | login | JSON [`UserRecord`](super::records::UserRecord) |
//! | `devices` | (app, device) | JSON [`DeviceRecord`](super::records::DeviceRecord) |
//! | `device_home` | device | app (for device-token lookup only) |
//! | `last_seen` | (app, device) | u64 ms — when its last session started; newer than the record's own `last_seen_ms` (written by versions before 2026-12-02) |
//! | `user_devices` | (app, user, device) | () |
//! | `messages` | (app, message id) | binary [`MessageRecord`](super::records::MessageRecord) (`message_codec.rs`; JSON as written before 2026-12, still read) |
//! | `bodies` | (app, seq) | the encoded `message` frame, shared by all recipients |
//! | `mailbox` | (app, device, seq) | [`MailboxEntry`] (binary, below) |
//! | `msg_recipients` | (app, message id, device) | () — devices a direct message was stored for; none for a push to exactly one device (its record's target names it) |
//! | `device_pending` | (app, device) | u64 — mailbox entries held (for the mailbox cap) |
//! | `gaps` | (app, device) | u64 — entries dropped by the cap, not yet told to the device |
//! | `topic_log` | (app, topic, seq) | [`MailboxEntry`] (the `delivered` flag unused) |
//! | `topic_counts` | (app, topic) | u64 — subscribers (the `$all` topic counts every device) |
//! | `subscriptions` | (app, device, topic) | [`Cursor`] (binary, below) |
//! | `expiry` | (at ms, app, message id) | u8 phase: 0 = expire the content, 1 = forget the record |
//! | `collapse_device` | (app, device, collapse key) | seq of the newest message with that key |
//! | `collapse_topic` | (app, topic, collapse key) | seq of the newest message with that key |
//! | `schedule` | (send at ms, app, message id) | JSON [`ScheduledPush`](super::records::ScheduledPush) |
//! | `idempotency` | (app, key) | JSON [`IdempotencyRecord`](super::records::IdempotencyRecord) |
//! | `idempotency_expiry` | (at ms, app, key) | () |
//! | `stats` | (app, minute since epoch) | [`StatsRow`] (5 × u64 BE) |
//! | `audit` | (at ms, seq) | JSON [`AuditRecord`](super::records::AuditRecord) |
//!
//! `seq` is one counter for the whole store, assigned by the writer in commit order, so a
//! device's mailbox in key order is the order its messages were accepted. Topic and `all`
//! pushes are stored once, in `topic_log`; each device keeps a [`Cursor`] per topic. The
//! `all` target is the reserved topic [`ALL_TOPIC`], which every device is subscribed to.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;

/// Bumped on any change to a table's key or value encoding.
pub const SCHEMA_VERSION: u64 = 1;

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
pub const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials");
pub const APP_CREDENTIALS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("app_credentials");
pub const CONSOLE_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("console_users");
pub const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
pub const DEVICE_HOME: TableDefinition<&str, &str> = TableDefinition::new("device_home");
/// When each device last connected, apart from its record: a connect rewrites this small
/// row, not the whole device record, so a wave of connects copies few pages.
pub const LAST_SEEN: TableDefinition<(&str, &str), u64> = TableDefinition::new("last_seen");
pub const USER_DEVICES: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("user_devices");
pub const MESSAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("messages");
pub const BODIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("bodies");
pub const MAILBOX: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("mailbox");
pub const MSG_RECIPIENTS: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("msg_recipients");
pub const DEVICE_PENDING: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("device_pending");
pub const GAPS: TableDefinition<(&str, &str), u64> = TableDefinition::new("gaps");
pub const TOPIC_LOG: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("topic_log");
pub const TOPIC_COUNTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("topic_counts");
pub const SUBSCRIPTIONS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("subscriptions");
pub const EXPIRY: TableDefinition<(u64, &str, &str), u8> = TableDefinition::new("expiry");
pub const COLLAPSE_DEVICE: TableDefinition<(&str, &str, &str), u64> =
    TableDefinition::new("collapse_device");
pub const COLLAPSE_TOPIC: TableDefinition<(&str, &str, &str), u64> =
    TableDefinition::new("collapse_topic");
pub const SCHEDULE: TableDefinition<(u64, &str, &str), &[u8]> = TableDefinition::new("schedule");
pub const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
pub const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");
pub const STATS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("stats");
pub const AUDIT: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("audit");

/// The reserved topic every device of an app is subscribed to: the `all` target. Topic names
/// from users cannot start with `$`.
pub const ALL_TOPIC: &str = "$all";

/// Expiry phases in the `expiry` table.
pub const EXPIRE_CONTENT: u8 = 0;
pub const FORGET_RECORD: u8 = 1;

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_NEXT_SEQ: &str = "next_seq";
pub const META_INITIALIZED: &str = "initialized";
/// The latest wall-clock time (ms) the writer has seen; time never runs backwards for expiry.
pub const META_CLOCK: &str = "clock_ms";
/// The first journal record not contained in the state of this commit
/// ([`journal`](super::journal)); records before it were applied already.
pub const META_JOURNAL_NEXT: &str = "journal_next";
/// A random number naming this store, written at creation: journal records carry it, so a
/// journal copied next to another store is refused instead of applied.
pub const META_STORE_ID: &str = "store_id";

/// One pending message in a device's mailbox:
/// `expires_at_ms: u64 BE | flags: u8 | message id: UTF-8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    pub expires_at_ms: u64,
    /// Written to the device's connection at least once.
    pub delivered: bool,
    pub message_id: String,
}

const FLAG_DELIVERED: u8 = 1;

impl MailboxEntry {
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message_id.len());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.push(if self.delivered { FLAG_DELIVERED } else { 0 });
        out.extend_from_slice(self.message_id.as_bytes());
        out
    }

    /// # Errors
    /// `Corrupt` when the bytes are not an entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            table: "mailbox",
            reason: reason.to_owned(),
        };
        let (head, id) = bytes
            .split_at_checked(9)
            .ok_or_else(|| corrupt("short entry"))?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&head[..8]);
        let message_id = std::str::from_utf8(id)
            .map_err(|_| corrupt("message id is not UTF-8"))?
            .to_owned();
        Ok(Self {
            expires_at_ms: u64::from_be_bytes(ts),
            delivered: head[8] & FLAG_DELIVERED != 0,
            message_id,
        })
    }
}

/// A device's position in one topic log: the highest seq it acknowledged, and the highest
/// seq counted as delivered to it. `acked: u64 BE | delivered: u64 BE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub acked: u64,
    pub delivered: u64,
}

impl Cursor {
    #[must_use]
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.acked.to_be_bytes());
        out[8..].copy_from_slice(&self.delivered.to_be_bytes());
        out
    }

    /// # Errors
    /// `Corrupt` when the bytes are not a cursor.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| StoreError::Corrupt {
            table: "subscriptions",
            reason: "cursor is not 16 bytes".into(),
        })?;
        let (a, d) = arr.split_at(8);
        let mut a8 = [0u8; 8];
        let mut d8 = [0u8; 8];
        a8.copy_from_slice(a);
        d8.copy_from_slice(d);
        Ok(Self {
            acked: u64::from_be_bytes(a8),
            delivered: u64::from_be_bytes(d8),
        })
    }
}

/// Per-app, per-minute counters: `accepted, delivered, acked, opened, expired`, u64 BE each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StatsRow {
    pub accepted: u64,
    pub delivered: u64,
    pub acked: u64,
    pub opened: u64,
    pub expired: u64,
}

impl StatsRow {
    #[must_use]
    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (i, v) in [
            self.accepted,
            self.delivered,
            self.acked,
            self.opened,
            self.expired,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// # Errors
    /// `Corrupt` when the bytes are not a row.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != 40 {
            return Err(StoreError::Corrupt {
                table: "stats",
                reason: "row is not 40 bytes".into(),
            });
        }
        let at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self {
            accepted: at(0),
            delivered: at(1),
            acked: at(2),
            opened: at(3),
            expired: at(4),
        })
    }

    pub fn add(&mut self, other: &StatsRow) {
        self.accepted += other.accepted;
        self.delivered += other.delivered;
        self.acked += other.acked;
        self.opened += other.opened;
        self.expired += other.expired;
    }
}

/// Where a store starts from, read from its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub next_seq: u64,
    pub clock: u64,
    pub store_id: u64,
    pub journal_next: u64,
}

/// Creates every table, checks the schema version and returns where the store starts.
///
/// # Errors
/// `SchemaTooNew` for a file written by a newer binary; storage errors.
pub fn initialize(db: &redb::Database) -> Result<Start, StoreError> {
    {
        let read = db.begin_read()?;
        if let Ok(meta) = read.open_table(META) {
            if let Some(found) = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value()) {
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    let start;
    {
        let mut meta = txn.open_table(META)?;
        if meta.get(META_SCHEMA_VERSION)?.is_none() {
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        }
        let found = meta.get(META_STORE_ID)?.map(|v| v.value());
        let store_id = if let Some(id) = found {
            id
        } else {
            let id = rand::random::<u64>();
            meta.insert(META_STORE_ID, id)?;
            id
        };
        start = Start {
            next_seq: meta.get(META_NEXT_SEQ)?.map_or(1, |v| v.value()),
            clock: meta.get(META_CLOCK)?.map_or(0, |v| v.value()),
            store_id,
            journal_next: meta.get(META_JOURNAL_NEXT)?.map_or(1, |v| v.value()),
        };
        txn.open_table(APPS)?;
        txn.open_table(CREDENTIALS)?;
        txn.open_table(APP_CREDENTIALS)?;
        txn.open_table(CONSOLE_USERS)?;
        txn.open_table(DEVICES)?;
        txn.open_table(DEVICE_HOME)?;
        txn.open_table(LAST_SEEN)?;
        txn.open_table(USER_DEVICES)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(BODIES)?;
        txn.open_table(MAILBOX)?;
        txn.open_table(MSG_RECIPIENTS)?;
        txn.open_table(DEVICE_PENDING)?;
        txn.open_table(GAPS)?;
        txn.open_table(TOPIC_LOG)?;
        txn.open_table(TOPIC_COUNTS)?;
        txn.open_table(SUBSCRIPTIONS)?;
        txn.open_table(EXPIRY)?;
        txn.open_table(COLLAPSE_DEVICE)?;
        txn.open_table(COLLAPSE_TOPIC)?;
        txn.open_table(SCHEDULE)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(IDEMPOTENCY_EXPIRY)?;
        txn.open_table(STATS)?;
        txn.open_table(AUDIT)?;
    }
    txn.commit()?;
    Ok(start)
}

/// Serializes a JSON record.
///
/// # Errors
/// `Corrupt` if serde fails, which it does not for our record types.
pub fn to_json<T: serde::Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

/// Parses a JSON record.
///
/// # Errors
/// `Corrupt` when the bytes are not that record.
pub fn from_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_entries_round_trip() {
        let e = MailboxEntry {
            expires_at_ms: 1_234_567,
            delivered: true,
            message_id: "msg_abc".into(),
        };
        assert_eq!(MailboxEntry::decode(&e.encode()).unwrap(), e);
        assert!(MailboxEntry::decode(&[1, 2, 3]).is_err());
    }
}
