//! The WebSocket adapter: authenticates (header or `hello` frame), then runs the session
//! loop: write what the session yields, read acks, ping on a timer, drop dead peers, and
//! cut off consumers whose writes stall.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store::Store;

use super::acks::AckPipe;
use super::client_ops::{self, ClientOpError};
use super::protocol::{self, ClientFrame};
use super::registry::{CloseReason, Outgoing, Registry};
use super::session::{
    authenticate_device, DeviceAuthError, DeviceIdentity, Session, SessionSettings,
};
use super::unconfirmed::DELIVERED_GRACE;

/// Close codes sent to clients (4000–4999 are ours).
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const INTERNAL: u16 = 1011;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    pub const DEVICE_REMOVED: u16 = 4004;
    pub const HELLO_TIMEOUT: u16 = 4008;
    pub const REPLACED: u16 = 4009;
    pub const APP_FULL: u16 = 4029;
}

/// Everything a WebSocket session needs from the server.
#[derive(Clone)]
pub struct WsContext {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub settings: SessionSettings,
    pub shutdown: CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The running configuration (for live limits).
    pub config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
}

impl WsContext {
    /// Whether the device's app may open one more session (a device replacing its own
    /// session always may). The limit is the app's `max_connections`, else the configured one.
    ///
    /// # Errors
    /// Store errors reading the app.
    pub fn app_has_room(
        &self,
        id: &DeviceIdentity,
    ) -> Result<Result<(), u64>, crate::store::StoreError> {
        let default = self.config.borrow().limits.max_connections;
        let limit = self
            .store
            .app(&id.app)?
            .and_then(|a| a.limits.max_connections)
            .unwrap_or(default);
        let open = self.registry.app_sessions(&id.app) as u64;
        if open >= limit && !self.registry.is_online(&id.app, &id.device) {
            return Ok(Err(limit));
        }
        Ok(Ok(()))
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Runs one WebSocket connection to its end. `identity` is set when the token came in a
/// header and was checked before the upgrade.
pub async fn run(mut socket: WebSocket, ctx: WsContext, identity: Option<DeviceIdentity>) {
    let identity = match identity {
        Some(id) => id,
        None => match hello(&mut socket, &ctx).await {
            Some(id) => id,
            None => return,
        },
    };
    if !matches!(ctx.app_has_room(&identity), Ok(Ok(()))) {
        close(
            &mut socket,
            close_code::APP_FULL,
            "the app has its maximum of connections",
        )
        .await;
        return;
    }
    let span = tracing::info_span!("session", app = %identity.app, device = %identity.device);
    live(socket, ctx, identity).instrument(span).await;
}

/// Waits for `{"type":"hello","token":…}` and authenticates it.
async fn hello(socket: &mut WebSocket, ctx: &WsContext) -> Option<DeviceIdentity> {
    let first = tokio::time::timeout(ctx.settings.hello_timeout, socket.next()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(_))) => {
            close(socket, close_code::PROTOCOL, "expected a hello frame").await;
            return None;
        }
        Ok(_) => return None,
        Err(_) => {
            close(socket, close_code::HELLO_TIMEOUT, "no hello in time").await;
            return None;
        }
    };
    let Ok(ClientFrame::Hello { token }) = ClientFrame::parse(&text) else {
        let _ = socket
            .send(Message::Text(
                protocol::error("invalid_request", "expected a hello frame").into(),
            ))
            .await;
        close(socket, close_code::PROTOCOL, "expected a hello frame").await;
        return None;
    };
    match authenticate_device(&ctx.store, &token) {
        Ok(id) => Some(id),
        Err(DeviceAuthError::Suspended) => {
            close(socket, close_code::FORBIDDEN, "app suspended").await;
            None
        }
        Err(DeviceAuthError::Unauthenticated) => {
            close(socket, close_code::UNAUTHENTICATED, "unauthenticated").await;
            None
        }
        Err(DeviceAuthError::Store(e)) => {
            tracing::error!(error = %e, "device authentication failed on the store");
            close(socket, close_code::INTERNAL, "unavailable").await;
            None
        }
    }
}

fn text_frame(item: &Outgoing) -> Option<Message> {
    if let Ok(text) = Utf8Bytes::try_from(item.frame.clone()) {
        Some(Message::Text(text))
    } else {
        tracing::error!(seq = item.seq, "stored frame is not UTF-8; skipped");
        None
    }
}

async fn live(mut socket: WebSocket, ctx: WsContext, identity: DeviceIdentity) {
    let settings = ctx.settings;
    let welcome = protocol::welcome(&identity.device, settings.heartbeat.as_secs());
    if socket.send(Message::Text(welcome.into())).await.is_err() {
        return;
    }
    ctx.store
        .touch_device(&identity.app, &identity.device, crate::domain::now_ms())
        .await;
    tracing::debug!("connected");
    let _counted = crate::metrics::ConnectionGuard::new(&ctx.metrics, "websocket");
    let mut session = Session::start(
        ctx.store.clone(),
        Arc::clone(&ctx.registry),
        identity,
        &settings,
    );
    let handle = Arc::clone(&session.handle);
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.tick().await;
    let mut confirm = tokio::time::interval(DELIVERED_GRACE);
    confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let dead_after = settings.heartbeat * 2 + settings.write_timeout;
    let mut acks = AckPipe::default();
    loop {
        tokio::select! {
            reason = handle.closed() => {
                let (code, why) = match reason {
                    Some(CloseReason::Replaced) => (close_code::REPLACED, "replaced by a newer connection"),
                    Some(CloseReason::DeviceRemoved) => (close_code::DEVICE_REMOVED, "device removed"),
                    Some(CloseReason::AppClosed) | None => (close_code::FORBIDDEN, "app suspended or deleted"),
                };
                close(&mut socket, code, why).await;
                break;
            }
            () = ctx.shutdown.cancelled() => {
                close(&mut socket, close_code::GOING_AWAY, "server shutting down").await;
                break;
            }
            frames = session.next_frames() => {
                let frames = match frames {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the mailbox failed");
                        close(&mut socket, close_code::INTERNAL, "unavailable").await;
                        break;
                    }
                };
                let write = async {
                    for item in &frames {
                        if let Some(msg) = text_frame(item) {
                            socket.feed(msg).await?;
                        }
                    }
                    socket.flush().await
                };
                // Cold paths are boxed: an idle session's task keeps only what its wait needs.
                match tokio::time::timeout(settings.write_timeout, Box::pin(write)).await {
                    Ok(Ok(())) => Box::pin(session.written(&frames)).await,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::info!("slow consumer cut off; its messages stay pending");
                        break;
                    }
                }
            }
            incoming = socket.next() => {
                let Some(Ok(msg)) = incoming else { break };
                last_heard = Instant::now();
                match msg {
                    Message::Text(text) => {
                        if !Box::pin(on_client_frame(&mut socket, &mut session, &mut acks, &text)).await {
                            break;
                        }
                    }
                    Message::Binary(_) => {
                        close(&mut socket, close_code::UNSUPPORTED, "binary frames are not supported").await;
                        break;
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            result = acks.done(), if acks.busy() => {
                if let Err(e) = Box::pin(acks.committed(result, session.store(), &session.identity)).await {
                    tracing::error!(error = %e, "storing acks failed");
                    close(&mut socket, close_code::INTERNAL, "unavailable").await;
                    break;
                }
            }
            _ = confirm.tick() => Box::pin(session.flush_delivered(DELIVERED_GRACE)).await,
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > dead_after {
                    tracing::info!("peer silent past the heartbeat deadline; dropped");
                    break;
                }
                let ping = socket.send(Message::Ping(bytes::Bytes::new()));
                if !matches!(tokio::time::timeout(settings.write_timeout, ping).await, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    // Acks taken are stored before the session ends, so a reconnect does not resend them.
    if let Err(e) = acks.finish(session.store(), &session.identity).await {
        tracing::warn!(error = %e, "acks taken at disconnect were not stored");
    }
    // Whatever was written and not acked was still delivered.
    session.flush_delivered(std::time::Duration::ZERO).await;
    tracing::debug!("disconnected");
}

/// Handles one client frame; `false` ends the session.
async fn on_client_frame(
    socket: &mut WebSocket,
    session: &mut Session,
    acks: &mut AckPipe,
    text: &str,
) -> bool {
    let frame = match ClientFrame::parse(text) {
        Ok(frame) => frame,
        Err(e) => {
            let err = protocol::error("invalid_request", &e.to_string());
            let _ = socket.send(Message::Text(err.into())).await;
            close(socket, close_code::POLICY, "invalid frame").await;
            return false;
        }
    };
    if let ClientFrame::Ack { ids } = frame {
        session.acked(&ids);
        return match acks.ack(session.store(), &session.identity, ids).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "storing acks failed");
                close(socket, close_code::INTERNAL, "unavailable").await;
                false
            }
        };
    }
    match client_ops::apply(session.store(), &session.identity, frame).await {
        Ok(()) => true,
        Err(ClientOpError::Forbidden(m)) => {
            let err = protocol::error("forbidden", &m);
            socket.send(Message::Text(err.into())).await.is_ok()
        }
        Err(ClientOpError::Invalid(m)) => {
            let err = protocol::error("invalid_request", &m);
            socket.send(Message::Text(err.into())).await.is_ok()
        }
        Err(ClientOpError::Store(e)) => {
            tracing::error!(error = %e, "storing a client request failed");
            close(socket, close_code::INTERNAL, "unavailable").await;
            false
        }
    }
}
