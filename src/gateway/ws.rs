//! The WebSocket adapter: authenticates (header or `hello` frame), then runs the session
//! loop: write what the session yields, read acks, ping on a timer, drop dead peers, and
//! cut off consumers whose writes stall.
//!
//! An idle session is one small task: it waits in a single poll over the socket, the
//! outbox, its ack in flight and its handle in the registry (close, overflow, and the
//! registry's shared ticker for heartbeats), holding no buffer, no timer and no future per
//! source. Everything that does work (writing, storing, closing) runs between
//! waits, boxed, so its state is not part of the idle task.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store::{Store, StoreError};

use super::acks::AckPipe;
use super::client_ops::{self, ClientOpError};
use super::protocol::{self, ClientFrame};
use super::registry::{CloseReason, Registry, Shared};
use super::session::{
    authenticate_device, DeviceAuthError, DeviceIdentity, Session, SessionSettings,
};
use super::unconfirmed::DELIVERED_GRACE;
use super::wire;
use super::ws_conn::{ClientEvent, ReadEnd, WsConn};

/// Close codes sent to clients (4000–4999 are ours).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
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
    /// The sessions' runtime: a WebSocket runs there whichever runtime served its upgrade
    /// (an HTTP/2 connection is on the API's, see [`crate::lanes`]).
    pub runtime: tokio::runtime::Handle,
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

/// Runs one WebSocket connection to its end, from the HTTP upgrade on. `identity` is set
/// when the token came in a header and was checked before the upgrade.
///
/// This is the one future a connection's task holds: everything lives here once, and the
/// steps below borrow it (an `async fn` keeps its arguments for its whole life, so passing
/// owned state down a chain of them would store it at every level).
pub async fn run(
    upgrade: hyper::upgrade::OnUpgrade,
    ctx: Arc<WsContext>,
    identity: Option<Box<DeviceIdentity>>,
) {
    let io = match upgrade.await {
        Ok(upgraded) => hyper_util::rt::TokioIo::new(upgraded),
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return;
        }
    };
    let mut conn = WsConn::new(io);
    let Some((mut session, early)) = Box::pin(open(&mut conn, &ctx, identity.map(|id| *id))).await
    else {
        return;
    };
    let _counted = crate::metrics::ConnectionGuard::new(&ctx.metrics, "websocket");
    let mut acks = AckPipe::default();
    let limit = ctx.settings.write_timeout;
    let first = if early.is_empty() {
        Step::Go
    } else {
        let span = session_span(&session.identity);
        Box::pin(on_client(&mut conn, &mut session, &mut acks, early, limit).instrument(span)).await
    };
    let step = match first {
        Step::Go => live(&mut conn, &ctx, &mut session, &mut acks).await,
        ended => ended,
    };
    let span = session_span(&session.identity);
    Box::pin(
        async {
            if let Step::Close(code, why) = step {
                conn.close(code, why, ctx.settings.write_timeout).await;
            }
            finish(session, acks).await;
        }
        .instrument(span),
    )
    .await;
}

/// The span of a session's work: it is made for each step, not kept for the session's
/// life, so an idle connection holds no span (about 300 bytes in the log subscriber).
fn session_span(id: &DeviceIdentity) -> tracing::Span {
    tracing::info_span!("session", app = %id.app, device = %id.device)
}

/// Authenticates (the `hello` frame when the header had no token), checks the app has
/// room, sends `welcome` and registers the session. Returns the session and what the
/// client sent after its hello, or `None` when the connection is over.
async fn open<S>(
    conn: &mut WsConn<S>,
    ctx: &WsContext,
    identity: Option<DeviceIdentity>,
) -> Option<(Session, Vec<ClientEvent>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let settings = &ctx.settings;
    let limit = settings.write_timeout;
    let (identity, early) = match identity {
        Some(id) => (id, Vec::new()),
        None => hello(conn, ctx).await?,
    };
    if !matches!(ctx.app_has_room(&identity), Ok(Ok(()))) {
        let why = "the app has its maximum of connections";
        conn.close(close_code::APP_FULL, why, limit).await;
        return None;
    }
    let span = session_span(&identity);
    async {
        let mut welcome = Vec::new();
        let text = protocol::welcome(&identity.device, settings.heartbeat.as_secs());
        wire::put_text(&mut welcome, text.as_bytes());
        conn.send(&welcome, limit).await.ok()?;
        let now_ms = crate::domain::now_ms();
        ctx.store
            .touch_device(&identity.app, &identity.device, now_ms)
            .await;
        tracing::debug!("connected");
        let session = Session::start(
            ctx.store.clone(),
            Arc::clone(&ctx.registry),
            identity,
            settings,
        );
        Some((session, early))
    }
    .instrument(span)
    .await
}

/// Waits for `{"type":"hello","token":…}` and authenticates it; returns the identity and
/// any client messages that came in the same read after the hello.
async fn hello<S>(
    conn: &mut WsConn<S>,
    ctx: &WsContext,
) -> Option<(DeviceIdentity, Vec<ClientEvent>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limit = ctx.settings.write_timeout;
    let deadline = Instant::now() + ctx.settings.hello_timeout;
    let mut events = Vec::new();
    while events.is_empty() {
        let read = std::future::poll_fn(|cx| conn.poll_events(cx));
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(got)) => events = got,
            Ok(Err(ReadEnd::Wire(e))) => {
                conn.close(e.close_code(), &e.to_string(), limit).await;
                return None;
            }
            Ok(Err(_)) => return None,
            Err(_) => {
                conn.close(close_code::HELLO_TIMEOUT, "no hello in time", limit)
                    .await;
                return None;
            }
        }
    }
    let rest = events.split_off(1);
    let token = match events.pop() {
        Some(ClientEvent::Frame(ClientFrame::Hello { token })) => token,
        Some(ClientEvent::Frame(_) | ClientEvent::Invalid(_)) => {
            let mut out = Vec::new();
            wire::put_text(
                &mut out,
                protocol::error("invalid_request", "expected a hello frame").as_bytes(),
            );
            let _ = conn.send(&out, limit).await;
            conn.close(close_code::PROTOCOL, "expected a hello frame", limit)
                .await;
            return None;
        }
        Some(ClientEvent::Close) | None => return None,
        Some(_) => {
            conn.close(close_code::PROTOCOL, "expected a hello frame", limit)
                .await;
            return None;
        }
    };
    match authenticate_device(&ctx.store, &token) {
        Ok(id) => Some((id, rest)),
        Err(DeviceAuthError::Suspended) => {
            conn.close(close_code::FORBIDDEN, "app suspended", limit)
                .await;
            None
        }
        Err(DeviceAuthError::Unauthenticated) => {
            conn.close(close_code::UNAUTHENTICATED, "unauthenticated", limit)
                .await;
            None
        }
        Err(DeviceAuthError::Store(e)) => {
            tracing::error!(error = %e, "device authentication failed on the store");
            conn.close(close_code::INTERNAL, "unavailable", limit).await;
            None
        }
    }
}

/// What woke an idle session.
enum Wake {
    Closed(Option<CloseReason>),
    AckStored(Result<usize, StoreError>),
    Client(Result<Vec<ClientEvent>, ReadEnd>),
    Frames(Result<Vec<Shared>, StoreError>),
    Timer,
}

/// How a step of the session ended.
enum Step {
    Go,
    /// Close with this code and reason, then end.
    Close(u16, &'static str),
    /// End without a close frame (the peer is gone or too slow).
    End,
}

/// The timers of a live session, in ms on the registry's clock (its ticker wakes the
/// session when the next one is due).
struct Clock {
    next_ping: u64,
    next_confirm: u64,
    last_heard: u64,
}

impl Clock {
    fn next(&self) -> u64 {
        self.next_ping.min(self.next_confirm)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The session loop; returns how it ended. Only the wait happens outside a span: each
/// step runs boxed (its state is not part of the idle task) inside the session's span.
async fn live<S>(
    conn: &mut WsConn<S>,
    ctx: &WsContext,
    session: &mut Session,
    acks: &mut AckPipe,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let registry = &ctx.registry;
    let handle = Arc::clone(&session.handle);
    let now = registry.clock_ms();
    let mut clock = Clock {
        next_ping: now.saturating_add(ms(ctx.settings.heartbeat)),
        next_confirm: now.saturating_add(ms(DELIVERED_GRACE)),
        last_heard: now,
    };
    let mut step = Step::Go;
    let mut turn = false;
    while matches!(step, Step::Go) {
        let now = registry.clock_ms();
        if now >= clock.next() {
            let span = session_span(&session.identity);
            let timer = on_timer(conn, session, &mut clock, &ctx.settings, now);
            step = Box::pin(timer.instrument(span)).await;
            continue;
        }
        handle.wake_at(clock.next());
        turn = !turn;
        let wake =
            std::future::poll_fn(|cx| poll_wake(cx, &handle, acks, conn, session, turn)).await;
        if matches!(wake, Wake::Timer) {
            continue;
        }
        if let Wake::Client(Ok(_)) = wake {
            clock.last_heard = registry.clock_ms();
        }
        let limit = ctx.settings.write_timeout;
        // No span for the steps fan-out repeats per batch: making one (its fields formatted
        // by the log subscriber) cost ~8 % of the server's CPU. What these steps log, they
        // log in a span made for that line (`in_session_span`). One future type and one
        // await either way, and `wake` is never borrowed here (a borrowed local stays in
        // the idle task's state across the await: 120 bytes more per connection).
        let (wake, routine) = wake.routine();
        let span = if routine {
            tracing::Span::none()
        } else {
            session_span(&session.identity)
        };
        step = Box::pin(on_wake(conn, session, acks, wake, limit).instrument(span)).await;
    }
    step
}

impl Wake {
    /// Frames to write, acks (and pongs) from the client, an ack stored: the steps that
    /// run once per batch of deliveries and log nothing when they succeed. Takes and gives
    /// back the value so that the caller's local is moved, not borrowed.
    fn routine(self) -> (Self, bool) {
        let routine = self.is_routine();
        (self, routine)
    }

    fn is_routine(&self) -> bool {
        match self {
            Wake::Frames(Ok(_)) | Wake::AckStored(Ok(_)) => true,
            Wake::Client(Ok(events)) => events.iter().all(|e| {
                matches!(
                    e,
                    ClientEvent::Frame(ClientFrame::Ack { .. }) | ClientEvent::Pong
                )
            }),
            _ => false,
        }
    }
}

/// Runs `f` (a log line) in the session's span: the current one when the step runs in it,
/// else one made for the line (see [`Wake::routine`]).
fn in_session_span(id: &DeviceIdentity, f: impl FnOnce()) {
    let current = tracing::Span::current();
    if current.metadata().is_some_and(|m| m.name() == "session") {
        f();
    } else {
        session_span(id).in_scope(f);
    }
}

/// Handles what woke the session.
async fn on_wake<S>(
    conn: &mut WsConn<S>,
    session: &mut Session,
    acks: &mut AckPipe,
    wake: Wake,
    limit: Duration,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match wake {
        Wake::Closed(reason) => {
            let (code, why) = match reason {
                Some(CloseReason::Replaced) => {
                    (close_code::REPLACED, "replaced by a newer connection")
                }
                Some(CloseReason::DeviceRemoved) => (close_code::DEVICE_REMOVED, "device removed"),
                Some(CloseReason::ServerStopping) => {
                    (close_code::GOING_AWAY, "server shutting down")
                }
                Some(CloseReason::AppClosed) | None => {
                    (close_code::FORBIDDEN, "app suspended or deleted")
                }
            };
            Step::Close(code, why)
        }
        Wake::AckStored(result) => {
            match acks
                .committed(result, session.store(), &session.identity)
                .await
            {
                Ok(()) => Step::Go,
                Err(e) => {
                    in_session_span(&session.identity, || {
                        tracing::error!(error = %e, "storing acks failed");
                    });
                    Step::Close(close_code::INTERNAL, "unavailable")
                }
            }
        }
        Wake::Client(Ok(events)) => on_client(conn, session, acks, events, limit).await,
        Wake::Client(Err(ReadEnd::Wire(e))) => {
            tracing::debug!(error = %e, "protocol error from the client");
            conn.close(e.close_code(), "protocol error", limit).await;
            Step::End
        }
        Wake::Client(Err(_)) => Step::End,
        Wake::Frames(Ok(frames)) => write_frames(conn, session, frames, limit).await,
        Wake::Frames(Err(e)) => {
            tracing::error!(error = %e, "reading the mailbox failed");
            Step::Close(close_code::INTERNAL, "unavailable")
        }
        Wake::Timer => Step::Go,
    }
}

/// The one wait of an idle session (the server's shutdown comes as a close from the
/// registry). `turn` alternates which of the socket and the outbox
/// is looked at first, so neither starves the other.
#[allow(clippy::too_many_arguments)]
fn poll_wake<S>(
    cx: &mut Context<'_>,
    handle: &super::SessionHandle,
    acks: &mut AckPipe,
    conn: &mut WsConn<S>,
    session: &mut Session,
    turn: bool,
) -> Poll<Wake>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Poll::Ready(reason) = handle.poll_closed(cx) {
        return Poll::Ready(Wake::Closed(reason));
    }
    if let Poll::Ready(result) = acks.poll_done(cx) {
        return Poll::Ready(Wake::AckStored(result));
    }
    for pass in [turn, !turn] {
        if pass {
            if let Poll::Ready(read) = conn.poll_events(cx) {
                return Poll::Ready(Wake::Client(read));
            }
        } else if let Poll::Ready(frames) = session.poll_next_frames(cx) {
            return Poll::Ready(Wake::Frames(frames));
        }
    }
    if handle.poll_tick(cx).is_ready() {
        return Poll::Ready(Wake::Timer);
    }
    Poll::Pending
}

async fn write_frames<S>(
    conn: &mut WsConn<S>,
    session: &mut Session,
    frames: Vec<Shared>,
    limit: Duration,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let size: usize = frames.iter().map(|f| f.frame.len() + 10).sum();
    let mut out = Vec::with_capacity(size);
    for item in &frames {
        wire::put_text(&mut out, &item.frame);
    }
    match conn.send(&out, limit).await {
        Ok(()) => {
            drop(out);
            session.written(&frames).await;
            Step::Go
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            in_session_span(&session.identity, || {
                tracing::info!("slow consumer cut off; its messages stay pending");
            });
            Step::End
        }
        Err(_) => Step::End,
    }
}

async fn on_timer<S>(
    conn: &mut WsConn<S>,
    session: &mut Session,
    clock: &mut Clock,
    settings: &SessionSettings,
    now: u64,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limit = settings.write_timeout;
    if now >= clock.next_confirm {
        session.flush_delivered(DELIVERED_GRACE).await;
        clock.next_confirm = now.saturating_add(ms(DELIVERED_GRACE));
    }
    if now >= clock.next_ping {
        let dead_after = ms(settings.heartbeat * 2 + settings.write_timeout);
        if now.saturating_sub(clock.last_heard) > dead_after {
            tracing::info!("peer silent past the heartbeat deadline; dropped");
            return Step::End;
        }
        let mut ping = Vec::new();
        wire::put_ping(&mut ping);
        if conn.send(&ping, limit).await.is_err() {
            return Step::End;
        }
        clock.next_ping = now.saturating_add(ms(settings.heartbeat));
    }
    Step::Go
}

/// Handles what the client sent, in order.
async fn on_client<S>(
    conn: &mut WsConn<S>,
    session: &mut Session,
    acks: &mut AckPipe,
    events: Vec<ClientEvent>,
    limit: Duration,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut replies = Vec::new();
    let mut step = Step::Go;
    for event in events {
        step = match event {
            ClientEvent::Frame(frame) => on_frame(session, acks, frame, &mut replies).await,
            ClientEvent::Invalid(reason) => {
                let err = protocol::error("invalid_request", &reason);
                wire::put_text(&mut replies, err.as_bytes());
                Step::Close(close_code::POLICY, "invalid frame")
            }
            ClientEvent::Ping(payload) => {
                wire::put_pong(&mut replies, &payload);
                Step::Go
            }
            ClientEvent::Pong => Step::Go,
            ClientEvent::Binary => {
                Step::Close(close_code::UNSUPPORTED, "binary frames are not supported")
            }
            ClientEvent::Close => Step::Close(close_code::NORMAL, ""),
        };
        if !matches!(step, Step::Go) {
            break;
        }
    }
    if !replies.is_empty() && conn.send(&replies, limit).await.is_err() {
        return Step::End;
    }
    step
}

/// Handles one client frame.
async fn on_frame(
    session: &mut Session,
    acks: &mut AckPipe,
    frame: ClientFrame,
    replies: &mut Vec<u8>,
) -> Step {
    if let ClientFrame::Ack { ids } = frame {
        session.acked(&ids);
        return match acks.ack(session.store(), &session.identity, ids).await {
            Ok(()) => Step::Go,
            Err(e) => {
                in_session_span(&session.identity, || {
                    tracing::error!(error = %e, "storing acks failed");
                });
                Step::Close(close_code::INTERNAL, "unavailable")
            }
        };
    }
    let message = match client_ops::apply(session.store(), &session.identity, frame).await {
        Ok(()) => return Step::Go,
        Err(ClientOpError::Forbidden(m)) => protocol::error("forbidden", &m),
        Err(ClientOpError::Invalid(m)) => protocol::error("invalid_request", &m),
        Err(ClientOpError::Store(e)) => {
            tracing::error!(error = %e, "storing a client request failed");
            return Step::Close(close_code::INTERNAL, "unavailable");
        }
    };
    wire::put_text(replies, message.as_bytes());
    Step::Go
}

/// The session is over: acks taken are stored, so a reconnect does not resend them, and
/// whatever was written and not acked still counts as delivered.
async fn finish(mut session: Session, mut acks: AckPipe) {
    if let Err(e) = acks.finish(session.store(), &session.identity).await {
        tracing::warn!(error = %e, "acks taken at disconnect were not stored");
    }
    session.flush_delivered(Duration::ZERO).await;
    tracing::debug!("disconnected");
}
