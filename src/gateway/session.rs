//! The session core, independent of the transport: device authentication, and the
//! state machine replay → live that decides which frames go out next.
//!
//! A session starts "catching up": it reads the device's mailbox from the store page by
//! page after the last sequence it sent. When a page comes back short it is live and takes
//! frames from its outbox, skipping any sequence it already sent. If the outbox overflowed
//! it goes back to catching up. Registration happens before the first store read, so every
//! commit is either in the store snapshot or in the outbox.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::auth::{parse_token, verify_secret, TokenKind};
use crate::store::{Store, StoreError};

use super::registry::{Outbox, Outgoing, Registry, SessionHandle, Shared};
use super::unconfirmed::{Marks, Unconfirmed};

/// Settings every session of the process shares.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub heartbeat: Duration,
    pub outbox_capacity: usize,
    pub write_timeout: Duration,
    pub hello_timeout: Duration,
    /// Most frames written to a connection in one flush.
    pub max_batch: usize,
}

/// An authenticated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub app: String,
    pub device: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceAuthError {
    #[error("the device token is missing, malformed, unknown or revoked")]
    Unauthenticated,
    #[error("the app is suspended")]
    Suspended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a device token: the one path every transport uses.
///
/// # Errors
/// `Unauthenticated` for any bad token (without saying which part was wrong),
/// `Suspended` when the app is suspended.
pub fn authenticate_device(store: &Store, token: &str) -> Result<DeviceIdentity, DeviceAuthError> {
    let Some((TokenKind::Device, device, secret)) = parse_token(token) else {
        return Err(DeviceAuthError::Unauthenticated);
    };
    let app = store
        .device_home(device)?
        .ok_or(DeviceAuthError::Unauthenticated)?;
    let record = store
        .device_record(&app, device)?
        .ok_or(DeviceAuthError::Unauthenticated)?;
    if !verify_secret(secret, &record.token_sha256) {
        return Err(DeviceAuthError::Unauthenticated);
    }
    let app_record = store.app(&app)?.ok_or(DeviceAuthError::Unauthenticated)?;
    if app_record.suspended {
        return Err(DeviceAuthError::Suspended);
    }
    Ok(DeviceIdentity {
        app,
        device: device.to_owned(),
    })
}

/// One device's live session.
pub struct Session {
    pub identity: DeviceIdentity,
    pub handle: Arc<SessionHandle>,
    store: Store,
    registry: Arc<Registry>,
    outbox: Outbox,
    last_sent: u64,
    catching_up: bool,
    /// Dropped messages announced in the `gap` frame about to be written.
    gap_told: u64,
    max_batch: usize,
    /// Written frames not yet acked (WebSocket sessions count delivery lazily).
    unconfirmed: Unconfirmed,
}

impl Session {
    /// Registers the session; the first call to [`Session::next_frames`] starts the replay.
    #[must_use]
    pub fn start(
        store: Store,
        registry: Arc<Registry>,
        identity: DeviceIdentity,
        settings: &SessionSettings,
    ) -> Self {
        let (handle, outbox) =
            registry.register(&identity.app, &identity.device, settings.outbox_capacity);
        // Read the topics after registering: a change committed since is already applied
        // by the registry and wins over this read.
        match store.device_record(&identity.app, &identity.device) {
            Ok(Some(d)) => {
                registry.initial_topics(&identity.app, &identity.device, &handle, d.topics);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the device's topics"),
        }
        Self {
            identity,
            handle,
            store,
            registry,
            outbox,
            last_sent: 0,
            catching_up: true,
            gap_told: 0,
            unconfirmed: Unconfirmed::default(),
            max_batch: settings.max_batch.max(1),
        }
    }

    /// The next frames to write, in sequence order. Cancel-safe: state changes only after
    /// the awaited part completes.
    ///
    /// # Errors
    /// Store errors while catching up.
    pub async fn next_frames(&mut self) -> Result<Vec<Shared>, StoreError> {
        std::future::poll_fn(|cx| self.poll_next_frames(cx)).await
    }

    /// [`Session::next_frames`] as a poll, for connection loops that wait on several things
    /// without holding a future for each.
    ///
    /// # Errors
    /// Store errors while catching up.
    pub fn poll_next_frames(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Vec<Shared>, StoreError>> {
        loop {
            if self.catching_up {
                match self.catch_up() {
                    Ok(frames) if frames.is_empty() => continue,
                    other => return Poll::Ready(other),
                }
            }
            let first = match self.outbox.poll_recv(cx) {
                Poll::Ready(item) => Some(item),
                Poll::Pending => {
                    if self.handle.poll_lagged(cx).is_pending() {
                        return Poll::Pending;
                    }
                    None
                }
            };
            if self.handle.take_lagged() {
                // Whatever overflowed is in the store; read it back from there.
                self.catching_up = true;
                continue;
            }
            let Some(first) = first else { continue };
            let now = self.store.now_ms();
            let mut frames = vec![first];
            self.outbox.take_into(&mut frames, self.max_batch - 1);
            frames.retain(|item| {
                let fresh = item.seq > self.last_sent && item.expires_at_ms > now;
                if fresh {
                    self.last_sent = item.seq;
                }
                fresh
            });
            if !frames.is_empty() {
                return Poll::Ready(Ok(frames));
            }
        }
    }

    /// One page of the mailbox after the last frame sent (with a `gap` frame first when
    /// messages were dropped); clears `catching_up` when the page comes back short.
    fn catch_up(&mut self) -> Result<Vec<Shared>, StoreError> {
        let mut frames = Vec::new();
        if self.gap_told == 0 {
            let dropped = self.store.gap(&self.identity.app, &self.identity.device)?;
            if dropped > 0 {
                self.gap_told = dropped;
                frames.push(Arc::new(Outgoing {
                    seq: 0,
                    expires_at_ms: u64::MAX,
                    frame: super::protocol::gap(dropped).into(),
                    topic: None,
                    id: None,
                }));
            }
        }
        let page = self.store.pending_after(
            &self.identity.app,
            &self.identity.device,
            self.last_sent,
            self.store.now_ms(),
            self.max_batch,
        )?;
        if page.len() < self.max_batch {
            self.catching_up = false;
        }
        if let Some(last) = page.last() {
            self.last_sent = last.seq;
        }
        frames.extend(page.into_iter().map(|p| {
            Arc::new(Outgoing {
                seq: p.seq,
                expires_at_ms: p.expires_at_ms,
                frame: p.frame,
                topic: p.topic.map(Arc::from),
                id: Some(Arc::from(p.message_id)),
            })
        }));
        Ok(frames)
    }

    /// Skips everything up to `seq`: the client says it has it (SSE `Last-Event-ID`,
    /// long-poll `after`). Unacked messages at or below it are not sent again here.
    pub fn resume_after(&mut self, seq: u64) {
        self.last_sent = self.last_sent.max(seq);
    }

    /// The store this session reads.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn gap_told_if_written(&mut self, frames: &[Shared]) {
        if self.gap_told > 0 && frames.iter().any(|f| f.seq == 0) {
            let (app, device) = (&self.identity.app, &self.identity.device);
            self.store.clear_gap(app, device, self.gap_told).await;
            self.gap_told = 0;
        }
    }

    async fn mark(&self, items: Marks) {
        if !items.is_empty() {
            let (app, device) = (&self.identity.app, &self.identity.device);
            self.store.mark_delivered(app, device, items).await;
        }
    }

    /// Marks frames as written to the connection (statistics: `delivered`) at once, and a
    /// written `gap` frame as told. For transports whose acks do not pass through the session.
    pub async fn delivered(&mut self, frames: &[Shared]) {
        self.gap_told_if_written(frames).await;
        let items = frames
            .iter()
            .filter(|f| f.seq > 0)
            .map(|f| (f.seq, f.topic.as_deref().map(str::to_owned)))
            .collect();
        self.mark(items).await;
    }

    /// Records frames as written; delivery is counted by their ack, or by
    /// [`Session::flush_delivered`] if no ack comes in time.
    pub async fn written(&mut self, frames: &[Shared]) {
        self.gap_told_if_written(frames).await;
        let overflow = self.unconfirmed.written(frames);
        self.mark(overflow).await;
    }

    /// The client acked these ids (their delivery counts with the ack).
    pub fn acked(&mut self, ids: &crate::domain::IdList) {
        self.unconfirmed.acked(ids);
    }

    /// Counts as delivered the written frames not acked within `grace`.
    pub async fn flush_delivered(&mut self, grace: Duration) {
        let due = self.unconfirmed.due(grace);
        self.mark(due).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.registry
            .unregister(&self.identity.app, &self.identity.device, &self.handle);
    }
}
