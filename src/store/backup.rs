//! Consistent snapshots: every table copied, inside one read transaction, into a new redb
//! file. The writer keeps running; the snapshot is the state of one commit.

use std::path::Path;

use redb::{Key, ReadableDatabase, ReadableTable, TableDefinition, Value};

use super::tables::{
    APPS, APP_CREDENTIALS, AUDIT, BODIES, COLLAPSE_DEVICE, COLLAPSE_TOPIC, CONSOLE_USERS,
    CREDENTIALS, DEVICES, DEVICE_HOME, DEVICE_PENDING, EXPIRY, GAPS, IDEMPOTENCY,
    IDEMPOTENCY_EXPIRY, LAST_SEEN, MAILBOX, MESSAGES, META, MSG_RECIPIENTS, SCHEDULE, STATS,
    SUBSCRIPTIONS, TOPIC_COUNTS, TOPIC_LOG, USER_DEVICES,
};
use super::{Store, StoreError};

fn copy<K: Key + 'static, V: Value + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(def)?;
    let mut target = to.open_table(def)?;
    let mut rows = 0;
    for row in source.iter()? {
        let (k, v) = row?;
        target.insert(k.value(), v.value())?;
        rows += 1;
    }
    Ok(rows)
}

impl Store {
    /// Writes a consistent copy of the whole store to a new database file at `path`
    /// (which must not exist). Returns the number of rows copied.
    ///
    /// # Errors
    /// Storage errors on either side.
    pub fn snapshot_to(&self, path: &Path) -> Result<u64, StoreError> {
        let read = self.db().begin_read()?;
        let target = redb::Database::create(path)
            .map_err(|e| StoreError::Open(path.display().to_string(), e.into()))?;
        let mut txn = target.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        let mut rows = 0;
        rows += copy(&read, &txn, META)?;
        rows += copy(&read, &txn, APPS)?;
        rows += copy(&read, &txn, CREDENTIALS)?;
        rows += copy(&read, &txn, APP_CREDENTIALS)?;
        rows += copy(&read, &txn, CONSOLE_USERS)?;
        rows += copy(&read, &txn, DEVICES)?;
        rows += copy(&read, &txn, DEVICE_HOME)?;
        rows += copy(&read, &txn, LAST_SEEN)?;
        rows += copy(&read, &txn, USER_DEVICES)?;
        rows += copy(&read, &txn, MESSAGES)?;
        rows += copy(&read, &txn, BODIES)?;
        rows += copy(&read, &txn, MAILBOX)?;
        rows += copy(&read, &txn, MSG_RECIPIENTS)?;
        rows += copy(&read, &txn, DEVICE_PENDING)?;
        rows += copy(&read, &txn, GAPS)?;
        rows += copy(&read, &txn, TOPIC_LOG)?;
        rows += copy(&read, &txn, TOPIC_COUNTS)?;
        rows += copy(&read, &txn, SUBSCRIPTIONS)?;
        rows += copy(&read, &txn, EXPIRY)?;
        rows += copy(&read, &txn, COLLAPSE_DEVICE)?;
        rows += copy(&read, &txn, COLLAPSE_TOPIC)?;
        rows += copy(&read, &txn, SCHEDULE)?;
        rows += copy(&read, &txn, IDEMPOTENCY)?;
        rows += copy(&read, &txn, IDEMPOTENCY_EXPIRY)?;
        rows += copy(&read, &txn, STATS)?;
        rows += copy(&read, &txn, AUDIT)?;
        txn.commit()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_table_of_the_format_is_in_the_snapshot() {
        let format = include_str!("tables.rs");
        let backup = include_str!("backup.rs");
        let mut seen = 0;
        for line in format.lines() {
            let Some(rest) = line.strip_prefix("pub const ") else {
                continue;
            };
            let Some((name, ty)) = rest.split_once(':') else {
                continue;
            };
            if !ty.trim_start().starts_with("TableDefinition") {
                continue;
            }
            seen += 1;
            assert!(
                backup.contains(&format!("copy(&read, &txn, {name})?")),
                "table {name} is not copied into backups"
            );
        }
        assert!(seen >= 20, "found only {seen} tables");
    }
}
