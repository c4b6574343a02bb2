//! Reads the console needs: the user list and an app's latest messages with their titles.

use redb::ReadableDatabase;

use super::records::{MessageRecord, UserRecord};
use super::tables::{from_json, BODIES, CONSOLE_USERS, MESSAGES};
use super::{Store, StoreError};

/// Most console users listed in one read.
pub const MAX_CONSOLE_USERS: usize = 1000;

/// A message with its notification title while its body is still stored.
#[derive(Debug, Clone)]
pub struct RecentMessage {
    pub record: MessageRecord,
    pub title: Option<String>,
}

impl Store {
    /// Console users in login order, at most [`MAX_CONSOLE_USERS`].
    ///
    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn console_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(CONSOLE_USERS)?;
        let mut out = Vec::new();
        for row in redb::ReadableTable::iter(&table)? {
            let (_, v) = row?;
            out.push(from_json("console_users", v.value())?);
            if out.len() >= MAX_CONSOLE_USERS {
                break;
            }
        }
        Ok(out)
    }

    /// The app's newest messages first (message ids sort by creation time), at most `limit`.
    ///
    /// # Errors
    /// Storage errors or a corrupt record.
    pub fn recent_messages(
        &self,
        app: &str,
        limit: usize,
    ) -> Result<Vec<RecentMessage>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(MESSAGES)?;
        let bodies = txn.open_table(BODIES)?;
        let mut out = Vec::new();
        for row in table.range((app, "")..(app, "\u{10ffff}"))?.rev() {
            let (_, v) = row?;
            let record: MessageRecord = super::message_codec::decode(v.value())?;
            let title = if let Some(kept) = &record.title {
                Some(kept.clone())
            } else if record.seq == 0 {
                None
            } else {
                bodies
                    .get((app, record.seq))?
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b.value()).ok())
                    .and_then(|frame| frame["notification"]["title"].as_str().map(str::to_owned))
            };
            out.push(RecentMessage { record, title });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
