//! What a client asks of the server besides receiving: acks, `opened` reports and topic
//! changes. The same code serves WebSocket frames and the HTTP endpoints SSE and long-poll
//! clients use (`POST /v1/ack`, `/v1/opened`, `/v1/subscribe`, `/v1/unsubscribe`).

use crate::domain::validate_topic;
use crate::store::{DevicePatch, Store, StoreError};

use super::protocol::ClientFrame;
use super::session::DeviceIdentity;

#[derive(Debug, thiserror::Error)]
pub enum ClientOpError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies one client request for an authenticated device.
///
/// # Errors
/// `Forbidden` for subscriptions the app does not allow, `Invalid` for bad topics or a
/// repeated hello, store errors.
pub async fn apply(
    store: &Store,
    id: &DeviceIdentity,
    frame: ClientFrame,
) -> Result<(), ClientOpError> {
    match frame {
        ClientFrame::Ack { ids } => {
            store.ack(&id.app, &id.device, ids).await?;
        }
        ClientFrame::Opened { ids } => store.mark_opened(&id.app, ids).await,
        ClientFrame::Subscribe { topics } => change_topics(store, id, topics, true).await?,
        ClientFrame::Unsubscribe { topics } => change_topics(store, id, topics, false).await?,
        ClientFrame::Hello { .. } => {
            return Err(ClientOpError::Invalid("already authenticated".into()));
        }
    }
    Ok(())
}

async fn change_topics(
    store: &Store,
    id: &DeviceIdentity,
    topics: Vec<String>,
    subscribe: bool,
) -> Result<(), ClientOpError> {
    let app = store
        .app(&id.app)?
        .ok_or_else(|| ClientOpError::Forbidden("the app is gone".into()))?;
    if !app.allow_client_subscribe {
        return Err(ClientOpError::Forbidden(
            "this app does not allow clients to subscribe themselves".into(),
        ));
    }
    for t in &topics {
        validate_topic(t).map_err(|e| ClientOpError::Invalid(format!("topics: {}", e.0)))?;
    }
    let patch = if subscribe {
        DevicePatch {
            subscribe: topics,
            ..DevicePatch::default()
        }
    } else {
        DevicePatch {
            unsubscribe: topics,
            ..DevicePatch::default()
        }
    };
    match store.patch_device(&id.app, &id.device, patch).await {
        Ok(_) => Ok(()),
        Err(StoreError::Invalid(m)) => Err(ClientOpError::Invalid(m)),
        Err(e) => Err(e.into()),
    }
}
