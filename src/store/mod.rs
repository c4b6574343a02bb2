//! The durable store on redb: the on-disk format ([`tables`]), the records kept in it, the
//! single writer thread with group commit ([`writer`]), and concurrent read queries.
//!
//! Invariant: a write request is answered only after the transaction holding it is durable:
//! its batch fsynced in the [`journal`] (the default) or committed with
//! `Durability::Immediate`, unless the operator chose relaxed durability.

mod backup;
mod calls;
mod error;
mod journal;
mod journal_binary;
mod journal_ops;
mod message_codec;
mod msg_cache;
mod open_tables;
mod ops_apps;
mod ops_console;
mod ops_delivery;
mod ops_devices;
mod ops_messages;
mod ops_sweep;
mod reads;
mod reads_console;
mod record_cache;
pub mod records;
pub mod tables;
mod writer;

#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use error::StoreError;
pub use ops_apps::{FirstStartOp, NewApp, NewCredential};
pub use ops_console::ConsoleOp;
pub use ops_delivery::Cancelled;
pub use ops_devices::{DevicePatch, NewDevice, MAX_TOPICS};
pub use ops_messages::{Idempotency, PushOp, PushReply};
pub use ops_sweep::SweepReport;
pub use reads::PendingEntry;
pub use reads_console::{RecentMessage, MAX_CONSOLE_USERS};
pub use writer::{Durability, WriterConfig, WriterStats};

use writer::Op;

/// What a committed transaction means for live connections; the gateway listens.
#[derive(Debug, Clone)]
pub enum Committed {
    /// A message is stored for these devices (or, with TTL 0, only to be sent live).
    Deliver {
        app: String,
        id: String,
        devices: Vec<String>,
        seq: u64,
        expires_at_ms: u64,
        frame: Bytes,
    },
    /// A topic (or `all`: [`tables::ALL_TOPIC`]) message, stored once in the topic log.
    Broadcast {
        app: String,
        id: String,
        topic: String,
        seq: u64,
        expires_at_ms: u64,
        frame: Bytes,
    },
    /// A device's topics changed; its live session follows.
    TopicsChanged {
        app: String,
        device: String,
        topics: Vec<String>,
    },
    /// A device's mailbox overflowed: its session should catch up and send a `gap` frame.
    Gap { app: String, device: String },
    /// The device is gone or its token changed: close its session.
    DeviceRemoved { app: String, device: String },
    /// The app was suspended or deleted: close all its sessions.
    AppClosed { app: String },
}

/// Receives committed events in commit order, on the writer thread. Must not block.
pub trait CommitListener: Send + Sync {
    fn committed(&self, event: &Committed);
}

/// The journal next to the database file at `db_path` (`warbler.redb` → `warbler.journal`).
#[must_use]
pub fn journal_path(db_path: &Path) -> std::path::PathBuf {
    db_path.with_extension("journal")
}

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<redb::Database>,
    ops: mpsc::Sender<Op>,
    stats: Arc<WriterStats>,
    /// The writer's clock (ms): the latest time it saw; see [`Store::now_ms`].
    clock: Arc<AtomicU64>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// App and credential records for the request path; see [`record_cache`].
    records: record_cache::RecordCache,
}

impl Store {
    /// Opens (or creates) the database file, checks its schema and starts the writer.
    ///
    /// # Errors
    /// When the file cannot be opened (for example another process holds it), or was
    /// written by a newer schema version.
    pub fn open(
        path: &Path,
        config: WriterConfig,
        listener: Arc<dyn CommitListener>,
    ) -> Result<Self, StoreError> {
        let db = match redb::Database::builder()
            .set_cache_size(config.cache_bytes)
            .create(path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::AlreadyOpen(path.display().to_string()))
            }
            Err(e) => return Err(StoreError::Open(path.display().to_string(), e.into())),
        };
        // The data dir is 0700 already; keep the file private too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let db = Arc::new(db);
        let start = tables::initialize(&db)?;
        let stats = Arc::new(WriterStats::default());
        let clock = Arc::new(AtomicU64::new(start.clock));
        let (ops, handle) = writer::spawn(
            Arc::clone(&db),
            config,
            &start,
            &journal_path(path),
            listener,
            Arc::clone(&stats),
            Arc::clone(&clock),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                ops,
                stats,
                clock,
                writer: std::sync::Mutex::new(Some(handle)),
                records: record_cache::RecordCache::default(),
            }),
        })
    }

    /// Requests waiting in the writer's queue.
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        self.inner.ops.max_capacity() - self.inner.ops.capacity()
    }

    /// The writer's counters.
    #[must_use]
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Now, for expiry: the wall clock, but never earlier than a time the writer already
    /// saw, so moving the clock back does not revive expired messages.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        crate::domain::now_ms().max(self.inner.clock.load(Ordering::Acquire))
    }

    pub(crate) fn db(&self) -> &redb::Database {
        &self.inner.db
    }

    /// Stops the writer after it has committed everything already queued, and waits for it.
    pub fn close(&self) {
        let handle = self
            .inner
            .writer
            .lock()
            .ok()
            .and_then(|mut guard| guard.take());
        if let Some(handle) = handle {
            // Dropping our sender is not enough while clones live; ask explicitly.
            let _ = self.inner.ops.try_send(Op::Shutdown);
            let _ = handle.join();
        }
    }
}
