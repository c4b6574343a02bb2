//! Device → live session. The store's writer hands every committed delivery here, in commit
//! order; each session gets the same encoded `Bytes` frame through its bounded outbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::store::{CommitListener, Committed};

/// One message queued for a session.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub seq: u64,
    pub expires_at_ms: u64,
    pub frame: Bytes,
}

/// Why a session was told to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection of the same device took over.
    Replaced,
    /// The device was deleted.
    DeviceRemoved,
    /// The app was suspended or deleted.
    AppClosed,
}

/// The registry's side of one live session.
pub struct SessionHandle {
    id: u64,
    outbox: mpsc::Sender<Outgoing>,
    lagged: AtomicBool,
    wake: Notify,
    close: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

impl SessionHandle {
    /// Whether the outbox overflowed since the last call; clears the flag.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }

    /// Resolves when the outbox overflowed.
    pub async fn lag_notified(&self) {
        self.wake.notified().await;
    }

    /// Resolves when the registry wants this session closed.
    pub async fn closed(&self) -> Option<CloseReason> {
        self.close.cancelled().await;
        self.reason.lock().ok().and_then(|r| *r)
    }

    fn close_with(&self, reason: CloseReason) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.close.cancel();
    }

    fn offer(&self, item: Outgoing) {
        match self.outbox.try_send(item) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Release);
                self.wake.notify_one();
            }
        }
    }
}

type Key = (String, String);

/// All live sessions of this process, by (app, device).
#[derive(Default)]
pub struct Registry {
    // A std mutex: held only for map operations and non-blocking `try_send`s, never across
    // an await, so contention stays short.
    sessions: Mutex<HashMap<Key, Arc<SessionHandle>>>,
    next_id: AtomicU64,
}

impl Registry {
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<SessionHandle>>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // operation is a single insert/remove/get), so a poisoned lock is still usable.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session for a device, closing any older one of the same device.
    /// Register before reading the store: whatever commits afterwards reaches the outbox.
    pub fn register(
        &self,
        app: &str,
        device: &str,
        capacity: usize,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let handle = Arc::new(SessionHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            outbox: tx,
            lagged: AtomicBool::new(false),
            wake: Notify::new(),
            close: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        let old = self
            .lock()
            .insert((app.to_owned(), device.to_owned()), Arc::clone(&handle));
        if let Some(old) = old {
            old.close_with(CloseReason::Replaced);
        }
        (handle, rx)
    }

    /// Removes the session if it is still the registered one for its device.
    pub fn unregister(&self, app: &str, device: &str, handle: &SessionHandle) {
        let mut map = self.lock();
        let key = (app.to_owned(), device.to_owned());
        if map.get(&key).is_some_and(|h| h.id == handle.id) {
            map.remove(&key);
        }
    }

    /// Whether a device has a live session here.
    #[must_use]
    pub fn is_online(&self, app: &str, device: &str) -> bool {
        self.lock()
            .contains_key(&(app.to_owned(), device.to_owned()))
    }

    /// Live sessions in this process.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CommitListener for Registry {
    fn committed(&self, event: &Committed) {
        match event {
            Committed::Deliver {
                app,
                devices,
                seq,
                expires_at_ms,
                frame,
            } => {
                let map = self.lock();
                let mut key = (app.clone(), String::new());
                for device in devices {
                    device.clone_into(&mut key.1);
                    if let Some(handle) = map.get(&key) {
                        handle.offer(Outgoing {
                            seq: *seq,
                            expires_at_ms: *expires_at_ms,
                            frame: frame.clone(),
                        });
                    }
                }
            }
            Committed::DeviceRemoved { app, device } => {
                if let Some(h) = self.lock().remove(&(app.clone(), device.clone())) {
                    h.close_with(CloseReason::DeviceRemoved);
                }
            }
            Committed::AppClosed { app } => {
                let mut map = self.lock();
                map.retain(|(a, _), h| {
                    if a == app {
                        h.close_with(CloseReason::AppClosed);
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(seq: u64, devices: &[&str]) -> Committed {
        Committed::Deliver {
            app: "a".into(),
            devices: devices.iter().map(|d| (*d).to_owned()).collect(),
            seq,
            expires_at_ms: u64::MAX,
            frame: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn deliveries_reach_only_registered_devices_in_order() {
        let r = Registry::new();
        let (_h, mut rx) = r.register("a", "d1", 8);
        r.committed(&deliver(1, &["d1", "d2"]));
        r.committed(&deliver(2, &["d1"]));
        assert_eq!(rx.recv().await.unwrap().seq, 1);
        assert_eq!(rx.recv().await.unwrap().seq, 2);
    }

    #[tokio::test]
    async fn overflow_sets_lagged_instead_of_blocking() {
        let r = Registry::new();
        let (h, _rx) = r.register("a", "d1", 1);
        r.committed(&deliver(1, &["d1"]));
        assert!(!h.take_lagged());
        r.committed(&deliver(2, &["d1"]));
        assert!(h.take_lagged());
        assert!(!h.take_lagged());
    }

    #[tokio::test]
    async fn a_new_session_replaces_the_old_one() {
        let r = Registry::new();
        let (old, _rx1) = r.register("a", "d1", 1);
        let (new, _rx2) = r.register("a", "d1", 1);
        assert_eq!(old.closed().await, Some(CloseReason::Replaced));
        r.unregister("a", "d1", &old);
        assert!(r.is_online("a", "d1"));
        r.unregister("a", "d1", &new);
        assert!(!r.is_online("a", "d1"));
    }
}
