//! The store's write API: each call queues one request for the writer thread and waits for
//! the commit that holds it (or, for statistics-only marks, just queues it).

use tokio::sync::oneshot;

use crate::domain::IdList;

use super::ops_apps::{FirstStartOp, NewApp, NewCredential};
use super::ops_delivery::Cancelled;
use super::ops_devices::{DevicePatch, NewDevice};
use super::ops_messages::{PushOp, PushReply};
use super::ops_sweep::SweepReport;
use super::records::{self, AppRecord};
use super::writer::Op;
use super::{Store, StoreError};

impl Store {
    pub(super) async fn call<T: Send + 'static>(
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
        self.call(|tx| Op::Push(Box::new(op), tx)).await
    }

    /// Stores several pushes, queued one after another so that they share a group commit
    /// (as far as the writer's batch cap allows); answers each once it is committed, in order.
    pub async fn push_many(&self, ops: Vec<PushOp>) -> Vec<Result<PushReply, StoreError>> {
        let mut waiting = Vec::with_capacity(ops.len());
        for op in ops {
            let (tx, rx) = oneshot::channel();
            let queued = self.inner.ops.send(Op::Push(Box::new(op), tx)).await;
            waiting.push(queued.ok().map(|()| rx));
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(match rx {
                Some(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
                None => Err(StoreError::Closed),
            });
        }
        out
    }

    /// Removes the acked messages from the device's mailbox; returns how many were pending.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn ack(
        &self,
        app: &str,
        device: &str,
        ids: impl Into<IdList>,
    ) -> Result<usize, StoreError> {
        let (app, device, ids) = (app.to_owned(), device.to_owned(), ids.into());
        self.call(|tx| Op::Ack {
            app,
            device,
            ids,
            reply: tx,
        })
        .await
    }

    /// Queues an ack without waiting for its commit; the receiver answers once it commits.
    /// Sessions use it to go on writing while their acks are stored (see `gateway::acks`).
    ///
    /// # Errors
    /// `Closed` when the writer is gone.
    pub async fn ack_queued(
        &self,
        app: &str,
        device: &str,
        ids: IdList,
    ) -> Result<oneshot::Receiver<Result<usize, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let op = Op::Ack {
            app: app.to_owned(),
            device: device.to_owned(),
            ids,
            reply: tx,
        };
        self.inner
            .ops
            .send(op)
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Records that these mailbox entries were written to the device's connection.
    /// Fire-and-forget: statistics only.
    pub async fn mark_delivered(&self, app: &str, device: &str, items: Vec<(u64, Option<String>)>) {
        let op = Op::Delivered {
            app: app.to_owned(),
            device: device.to_owned(),
            items,
        };
        // A closed writer only happens at shutdown; the counts are statistics.
        let _ = self.inner.ops.send(op).await;
    }

    /// Counts client `opened` reports (statistics; at most `targeted` per message).
    pub async fn mark_opened(&self, app: &str, ids: IdList) {
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

    /// Cancels what of a message is not yet delivered.
    ///
    /// # Errors
    /// `NotFound` for an unknown message of that app.
    pub async fn cancel(&self, app: &str, id: &str) -> Result<Cancelled, StoreError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(|reply| Op::Cancel { app, id, reply }).await
    }

    /// Subtracts what a session told its device (in a `gap` frame) from its gap count.
    pub async fn clear_gap(&self, app: &str, device: &str, told: u64) {
        let op = Op::ClearGap {
            app: app.to_owned(),
            device: device.to_owned(),
            told,
        };
        let _ = self.inner.ops.send(op).await;
    }

    /// Appends an audit record; answers once it is committed.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn record_audit(&self, record: records::AuditRecord) -> Result<(), StoreError> {
        self.call(|reply| Op::Audit(Box::new(record), reply)).await
    }

    /// Creates, updates or deletes a console user; answers with the user.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` (exists, or the last owner would go), storage errors.
    pub async fn console(&self, op: super::ConsoleOp) -> Result<records::UserRecord, StoreError> {
        self.call(|reply| Op::Console(Box::new(op), reply)).await
    }

    /// Runs one sweep: expiry, due schedules, idempotency keys, old statistics.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let now_ms = crate::domain::now_ms();
        self.call(|reply| Op::Sweep { now_ms, reply }).await
    }
}
