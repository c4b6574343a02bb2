//! The durable store on redb: the on-disk format ([`tables`]), the records kept in it, the
//! single writer thread with group commit ([`writer`]), and concurrent read queries.
//!
//! Invariant: a write request is answered only after the transaction holding it committed
//! (with `Durability::Immediate` unless the operator chose relaxed durability).

mod error;
mod ops_apps;
mod ops_devices;
mod ops_messages;
mod reads;
pub mod records;
pub mod tables;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use error::StoreError;
pub use ops_apps::{FirstStartOp, NewApp, NewCredential};
pub use ops_devices::{DevicePatch, NewDevice};
pub use ops_messages::{PushOp, PushReply};
pub use reads::PendingEntry;
pub use writer::{Durability, WriterConfig, WriterStats};

use records::AppRecord;
use writer::Op;

/// What a committed transaction means for live connections; the gateway listens.
#[derive(Debug, Clone)]
pub enum Committed {
    /// A message is stored for these devices (or, with TTL 0, only to be sent live).
    Deliver {
        app: String,
        devices: Vec<String>,
        seq: u64,
        expires_at_ms: u64,
        frame: Bytes,
    },
    /// The device is gone or its token changed: close its session.
    DeviceRemoved { app: String, device: String },
    /// The app was suspended or deleted: close all its sessions.
    AppClosed { app: String },
}

/// Receives committed events in commit order, on the writer thread. Must not block.
pub trait CommitListener: Send + Sync {
    fn committed(&self, event: &Committed);
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
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
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
        let db = match redb::Database::create(path) {
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
        let next_seq = tables::initialize(&db)?;
        let stats = Arc::new(WriterStats::default());
        let (ops, handle) = writer::spawn(
            Arc::clone(&db),
            config,
            next_seq,
            listener,
            Arc::clone(&stats),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                ops,
                stats,
                writer: std::sync::Mutex::new(Some(handle)),
            }),
        })
    }

    /// The writer's counters.
    #[must_use]
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    pub(crate) fn db(&self) -> &redb::Database {
        &self.inner.db
    }

    async fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ops
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores a push; answers once it is committed.
    ///
    /// # Errors
    /// `NotFound` for an unknown single device, storage errors as `Unavailable`.
    pub async fn push(&self, op: PushOp) -> Result<PushReply, StoreError> {
        self.call(|tx| Op::Push(op, tx)).await
    }

    /// Removes the acked messages from the device's mailbox; returns how many were pending.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn ack(
        &self,
        app: &str,
        device: &str,
        ids: Vec<String>,
    ) -> Result<usize, StoreError> {
        let (app, device) = (app.to_owned(), device.to_owned());
        self.call(|tx| Op::Ack {
            app,
            device,
            ids,
            reply: tx,
        })
        .await
    }

    /// Records that these mailbox entries were written to the device's connection.
    /// Fire-and-forget: statistics only.
    pub async fn mark_delivered(&self, app: &str, device: &str, seqs: Vec<u64>) {
        let op = Op::Delivered {
            app: app.to_owned(),
            device: device.to_owned(),
            seqs,
        };
        // A closed writer only happens at shutdown; the counts are statistics.
        let _ = self.inner.ops.send(op).await;
    }

    /// Counts client `opened` reports (statistics; at most `targeted` per message).
    pub async fn mark_opened(&self, app: &str, ids: Vec<String>) {
        let op = Op::Opened {
            app: app.to_owned(),
            ids,
        };
        let _ = self.inner.ops.send(op).await;
    }

    /// First start: the owner, the admin token and the demo app, written in one transaction.
    ///
    /// # Errors
    /// `Conflict` when the store was initialized already.
    pub async fn first_start(&self, op: FirstStartOp) -> Result<(), StoreError> {
        self.call(|tx| Op::FirstStart(Box::new(op), tx)).await
    }

    /// # Errors
    /// `Conflict` when an app of that name exists.
    pub async fn create_app(&self, app: NewApp) -> Result<(), StoreError> {
        self.call(|tx| Op::CreateApp(Box::new(app), tx)).await
    }

    /// Applies `update` to the app record; closes its sessions if it got suspended.
    ///
    /// # Errors
    /// `NotFound` for an unknown app.
    pub async fn update_app(
        &self,
        app: &str,
        update: Box<dyn FnOnce(&mut AppRecord) + Send>,
    ) -> Result<AppRecord, StoreError> {
        let app = app.to_owned();
        self.call(|tx| Op::UpdateApp {
            app,
            update,
            reply: tx,
        })
        .await
    }

    /// Deletes an app and everything it owns.
    ///
    /// # Errors
    /// `NotFound` for an unknown app.
    pub async fn delete_app(&self, app: &str) -> Result<(), StoreError> {
        let app = app.to_owned();
        self.call(|tx| Op::DeleteApp(app, tx)).await
    }

    /// # Errors
    /// `NotFound` when the credential's app does not exist.
    pub async fn create_credential(&self, cred: NewCredential) -> Result<(), StoreError> {
        self.call(|tx| Op::CreateCredential(Box::new(cred), tx))
            .await
    }

    /// Revokes (deletes) a credential of an app.
    ///
    /// # Errors
    /// `NotFound` when the app has no such credential.
    pub async fn revoke_credential(&self, app: &str, id: &str) -> Result<(), StoreError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(|tx| Op::RevokeCredential { app, id, reply: tx })
            .await
    }

    /// # Errors
    /// `NotFound` for an unknown app.
    pub async fn register_device(&self, device: NewDevice) -> Result<(), StoreError> {
        self.call(|tx| Op::RegisterDevice(Box::new(device), tx))
            .await
    }

    /// # Errors
    /// `NotFound` for an unknown device of that app.
    pub async fn patch_device(
        &self,
        app: &str,
        device: &str,
        patch: DevicePatch,
    ) -> Result<records::DeviceRecord, StoreError> {
        let (app, device) = (app.to_owned(), device.to_owned());
        self.call(|tx| Op::PatchDevice {
            app,
            device,
            patch,
            reply: tx,
        })
        .await
    }

    /// Deletes a device, its user binding and its mailbox.
    ///
    /// # Errors
    /// `NotFound` for an unknown device of that app.
    pub async fn delete_device(&self, app: &str, device: &str) -> Result<(), StoreError> {
        let (app, device) = (app.to_owned(), device.to_owned());
        self.call(|tx| Op::DeleteDevice {
            app,
            device,
            reply: tx,
        })
        .await
    }

    /// Records when a device was last connected.
    pub async fn touch_device(&self, app: &str, device: &str, at_ms: u64) {
        let op = Op::TouchDevice {
            app: app.to_owned(),
            device: device.to_owned(),
            at_ms,
        };
        let _ = self.inner.ops.send(op).await;
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
