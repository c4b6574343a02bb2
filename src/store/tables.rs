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
//! | `user_devices` | (app, user, device) | () |
//! | `messages` | (app, message id) | JSON [`MessageRecord`](super::records::MessageRecord) |
//! | `bodies` | (app, seq) | the encoded `message` frame, shared by all recipients |
//! | `mailbox` | (app, device, seq) | [`MailboxEntry`] (binary, below) |
//!
//! `seq` is one counter for the whole store, assigned by the writer in commit order, so a
//! device's mailbox in key order is the order its messages were accepted.

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
pub const USER_DEVICES: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("user_devices");
pub const MESSAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("messages");
pub const BODIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("bodies");
pub const MAILBOX: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("mailbox");

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_NEXT_SEQ: &str = "next_seq";
pub const META_INITIALIZED: &str = "initialized";

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

/// Creates every table, checks the schema version and returns the next sequence number.
///
/// # Errors
/// `SchemaTooNew` for a file written by a newer binary; storage errors.
pub fn initialize(db: &redb::Database) -> Result<u64, StoreError> {
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
    let next_seq;
    {
        let mut meta = txn.open_table(META)?;
        if meta.get(META_SCHEMA_VERSION)?.is_none() {
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        }
        next_seq = meta.get(META_NEXT_SEQ)?.map_or(1, |v| v.value());
        txn.open_table(APPS)?;
        txn.open_table(CREDENTIALS)?;
        txn.open_table(APP_CREDENTIALS)?;
        txn.open_table(CONSOLE_USERS)?;
        txn.open_table(DEVICES)?;
        txn.open_table(DEVICE_HOME)?;
        txn.open_table(USER_DEVICES)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(BODIES)?;
        txn.open_table(MAILBOX)?;
    }
    txn.commit()?;
    Ok(next_seq)
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
