//! The long-poll adapter: one request is one short session. It returns at once with what is
//! pending, or waits up to `wait` for the first messages, as a JSON array of the same
//! frames WebSocket clients get. Messages stay pending until `POST /v1/ack`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::session::{DeviceIdentity, Session};
use super::ws::WsContext;

/// Longest wait a client may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Runs one poll and returns the JSON array body.
///
/// # Errors
/// Store errors while reading the mailbox.
pub async fn poll(
    ctx: Arc<WsContext>,
    identity: DeviceIdentity,
    wait: Duration,
    after: Option<u64>,
) -> Result<Bytes, crate::store::StoreError> {
    ctx.store
        .touch_device(&identity.app, &identity.device, crate::domain::now_ms())
        .await;
    let _counted = crate::metrics::ConnectionGuard::new(&ctx.metrics, "long_poll");
    let mut session = Session::start(
        ctx.store.clone(),
        Arc::clone(&ctx.registry),
        identity,
        &ctx.settings,
    );
    if let Some(seq) = after {
        session.resume_after(seq);
    }
    let handle = Arc::clone(&session.handle);
    let frames = tokio::select! {
        biased;
        frames = session.next_frames() => frames?,
        () = tokio::time::sleep(wait.min(MAX_WAIT)) => Vec::new(),
        _ = handle.closed() => Vec::new(),
        () = ctx.shutdown.cancelled() => Vec::new(),
    };
    let mut body = Vec::with_capacity(2 + frames.iter().map(|f| f.frame.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, item) in frames.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.frame);
    }
    body.push(b']');
    session.delivered(&frames).await;
    Ok(Bytes::from(body))
}
