//! A WebSocket session's acks on their way to the store: one ack request in flight at a
//! time, and the ids that arrive meanwhile merged into the next one. The session goes on
//! writing frames while its acks commit, and a busy store gets one request per session per
//! commit instead of one per ack frame.

use std::future::Future as _;

use tokio::sync::oneshot;

use crate::domain::IdList;
use crate::store::{Store, StoreError};

use super::session::DeviceIdentity;

/// Most ids held back while an ack is in flight; past it the session waits for the store.
const MAX_QUEUED_IDS: usize = 16_384;

type InFlight = oneshot::Receiver<Result<usize, StoreError>>;

#[derive(Default)]
pub struct AckPipe {
    in_flight: Option<InFlight>,
    /// Ids taken while an ack is in flight; boxed so an idle session's task holds one
    /// pointer here, not the list.
    queued: Option<Box<IdList>>,
}

impl AckPipe {
    /// Takes the ids of an ack frame: sends them now if nothing is in flight, else queues
    /// them (waiting for the store first if the queue is full).
    ///
    /// # Errors
    /// The store failed or is closed.
    pub async fn ack(
        &mut self,
        store: &Store,
        id: &DeviceIdentity,
        ids: IdList,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.in_flight.is_none() && self.queued.is_none() {
            // The common case: nothing waiting, so these go as they are.
            self.in_flight = Some(store.ack_queued(&id.app, &id.device, ids).await?);
            return Ok(());
        }
        let queued = self.queued.as_ref().map_or(0, |q| q.len());
        if self.in_flight.is_some() && queued + ids.len() > MAX_QUEUED_IDS {
            self.settle().await?;
        }
        match self.queued.as_mut() {
            Some(q) => q.extend_from(&ids),
            None => self.queued = Some(Box::new(ids)),
        }
        if self.in_flight.is_none() {
            self.send_queued(store, id).await?;
        }
        Ok(())
    }

    /// Whether an ack is waiting for its commit.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Resolves when the ack in flight has committed (pending forever when none is).
    /// Cancel-safe; call [`AckPipe::committed`] with its result.
    pub async fn done(&mut self) -> Result<usize, StoreError> {
        match self.in_flight.as_mut() {
            Some(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
            None => std::future::pending().await,
        }
    }

    /// [`AckPipe::done`] as a poll (pending when nothing is in flight).
    pub fn poll_done(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<usize, StoreError>> {
        match self.in_flight.as_mut() {
            Some(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
            None => std::task::Poll::Pending,
        }
    }

    /// After [`AckPipe::done`] resolved: sends what queued up meanwhile.
    ///
    /// # Errors
    /// The store failed or is closed.
    pub async fn committed(
        &mut self,
        result: Result<usize, StoreError>,
        store: &Store,
        id: &DeviceIdentity,
    ) -> Result<(), StoreError> {
        self.in_flight = None;
        result?;
        self.send_queued(store, id).await
    }

    /// Stores every ack taken so far and waits for it (the session is ending).
    ///
    /// # Errors
    /// The store failed or is closed.
    pub async fn finish(&mut self, store: &Store, id: &DeviceIdentity) -> Result<(), StoreError> {
        self.settle().await?;
        self.send_queued(store, id).await?;
        self.settle().await
    }

    async fn settle(&mut self) -> Result<(), StoreError> {
        if let Some(rx) = self.in_flight.take() {
            rx.await.unwrap_or(Err(StoreError::Closed))?;
        }
        Ok(())
    }

    async fn send_queued(&mut self, store: &Store, id: &DeviceIdentity) -> Result<(), StoreError> {
        let Some(ids) = self.queued.take() else {
            return Ok(());
        };
        if ids.is_empty() {
            return Ok(());
        }
        let ids = *ids;
        self.in_flight = Some(store.ack_queued(&id.app, &id.device, ids).await?);
        Ok(())
    }
}
