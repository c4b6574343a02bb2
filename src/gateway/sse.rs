//! The Server-Sent Events adapter: the same session as WebSocket, written as
//! `event: message` / `id: <seq>` / `data: <frame>` records, with comment heartbeats.
//! A client that stops reading fills the small channel in front of the response body and
//! is cut off after the write timeout.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::registry::{CloseReason, Outgoing};
use super::session::{DeviceIdentity, Session};
use super::ws::WsContext;

/// Chunks buffered between the session task and the HTTP response body.
const CHANNEL: usize = 8;

fn record(item: &Outgoing) -> Bytes {
    let mut out = Vec::with_capacity(item.frame.len() + 40);
    if item.seq == 0 {
        out.extend_from_slice(b"event: gap\ndata: ");
    } else {
        out.extend_from_slice(format!("event: message\nid: {}\ndata: ", item.seq).as_bytes());
    }
    out.extend_from_slice(&item.frame);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Starts a session and returns the body stream of its SSE response.
pub fn open(
    ctx: Arc<WsContext>,
    identity: DeviceIdentity,
    last_event_id: Option<u64>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL);
    let span = tracing::info_span!("sse", app = %identity.app, device = %identity.device);
    tokio::spawn(run(ctx, identity, last_event_id, tx).instrument(span));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(chunk), rx))
    })
}

async fn run(
    ctx: Arc<WsContext>,
    identity: DeviceIdentity,
    last_event_id: Option<u64>,
    tx: mpsc::Sender<Bytes>,
) {
    let settings = ctx.settings;
    let send = |chunk: Bytes| {
        let tx = tx.clone();
        async move {
            matches!(
                tokio::time::timeout(settings.write_timeout, tx.send(chunk)).await,
                Ok(Ok(()))
            )
        }
    };
    let welcome = super::protocol::welcome(&identity.device, settings.heartbeat.as_secs());
    if !send(Bytes::from(format!("event: welcome\ndata: {welcome}\n\n"))).await {
        return;
    }
    ctx.store
        .touch_device(&identity.app, &identity.device, crate::domain::now_ms())
        .await;
    let _counted = crate::metrics::ConnectionGuard::new(&ctx.metrics, "sse");
    let mut session = Session::start(
        ctx.store.clone(),
        Arc::clone(&ctx.registry),
        identity,
        &settings,
    );
    if let Some(seq) = last_event_id {
        session.resume_after(seq);
    }
    let handle = Arc::clone(&session.handle);
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            reason = handle.closed() => {
                let why = match reason {
                    Some(CloseReason::Replaced) => "replaced",
                    Some(CloseReason::DeviceRemoved) => "device_removed",
                    Some(CloseReason::ServerStopping) => "going_away",
                    Some(CloseReason::AppClosed) | None => "app_closed",
                };
                let _ = send(Bytes::from(format!("event: close\ndata: {{\"reason\":\"{why}\"}}\n\n"))).await;
                break;
            }
            () = ctx.shutdown.cancelled() => {
                let _ = send(Bytes::from_static(b"event: close\ndata: {\"reason\":\"going_away\"}\n\n")).await;
                break;
            }
            frames = session.next_frames() => {
                let frames = match frames {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the mailbox failed");
                        break;
                    }
                };
                let mut chunk = Vec::new();
                for item in &frames {
                    chunk.extend_from_slice(&record(item));
                }
                if !send(Bytes::from(chunk)).await {
                    tracing::info!("SSE consumer gone or too slow; its messages stay pending");
                    break;
                }
                session.delivered(&frames).await;
            }
            _ = heartbeat.tick() => {
                if !send(Bytes::from_static(b": ping\n\n")).await {
                    break;
                }
            }
        }
    }
}
