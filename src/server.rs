//! The accept loop: TCP → TLS (handshake timeout) → HTTP/1.1 or HTTP/2 (by ALPN/preface)
//! serving the router, with connection and header bounds, and graceful shutdown. Without a
//! TLS configuration (`tls.mode = "off"`, allowed only by an explicit flag) the same HTTP
//! stack runs over plain TCP. Once a connection's first request has arrived, an API
//! connection moves to the API runtime and a device connection stays ([`crate::lanes`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::runtime::Handle;

use crate::lanes::{self, Lane, Movable};
use crate::metrics::Metrics;
use crate::net_guard::Guarded;
use crate::tls::stream::TlsStream;

/// The remote address of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/1 read buffer (so the largest header block) and HTTP/2 header list, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Connection bounds applied before any TLS work.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// All connections at once.
    pub total: usize,
    /// Connections at once from one IP address.
    pub per_ip: usize,
}

/// Open connections per IP address; the guard gives its slot back when dropped.
#[derive(Default)]
struct PerIp(std::sync::Mutex<HashMap<IpAddr, usize>>);

struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting and lets open requests finish
/// (WebSocket sessions close themselves on the same token).
///
/// `api`: the runtime API connections move to ([`crate::lanes`]); `None` serves every
/// connection on this one.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>>,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    api: Option<Handle>,
) {
    let permits = Arc::new(Semaphore::new(limits.total));
    let per_ip = Arc::new(PerIp::default());
    loop {
        let accepted = tokio::select! {
            // Check the stop signal first: a client reconnecting during shutdown is not
            // accepted only to be cut off.
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.total, "connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let Some(slot) = per_ip.take(peer.ip(), limits.per_ip) else {
            tracing::warn!(%peer, max = limits.per_ip, "per-address connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // The certificate in force now: a swapped one applies from the next connection.
        let acceptor = tls.as_ref().map(|t| t.borrow().clone());
        let ctx = ConnCtx {
            router: router.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            api: api.clone(),
        };
        let metrics = Arc::clone(&metrics);
        // The slots go with the stream, so an upgraded WebSocket, which outlives the HTTP
        // connection's task, keeps counting against the limits until it closes.
        let slots = Slots {
            _ip: slot,
            _total: permit,
        };
        tracker.spawn(Box::pin(async move {
            connection(tcp, slots, peer, acceptor, &metrics, ctx).await;
        }));
    }
    drop(listener);
    tracing::info!("stopped accepting connections");
}

/// A connection's places under the total and per-address limits.
struct Slots {
    _ip: IpSlot,
    _total: tokio::sync::OwnedSemaphorePermit,
}

/// What serving a connection needs besides the stream.
struct ConnCtx {
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Where API connections go; `None`: they stay.
    api: Option<Handle>,
}

async fn connection(
    tcp: tokio::net::TcpStream,
    slots: Slots,
    peer: SocketAddr,
    acceptor: Option<Arc<rustls::ServerConfig>>,
    metrics: &Metrics,
    ctx: ConnCtx,
) {
    let Some(config) = acceptor else {
        let lane = match ctx.api {
            Some(_) => match first_bytes_lane_plain(&tcp).await {
                Some(lane) => lane,
                None => return,
            },
            None => Lane::Devices,
        };
        serve_in_lane(tcp, lane, slots, peer, ctx).await;
        return;
    };
    let mut tls =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsStream::accept(tcp, config)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
    let lane = if ctx.api.is_none() {
        Lane::Devices
    } else if tls.alpn_protocol() == Some(b"h2") {
        // HTTP/2 multiplexes anything: the API lane (see `lanes`).
        Lane::Api
    } else {
        match first_bytes_lane_tls(&mut tls).await {
            Some(lane) => lane,
            None => return,
        }
    };
    serve_in_lane(tls, lane, slots, peer, ctx).await;
}

/// Serves the connection here, or on the API runtime when that is its lane.
async fn serve_in_lane<S>(stream: S, lane: Lane, slots: Slots, peer: SocketAddr, ctx: ConnCtx)
where
    S: Movable + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let api = match (lane, &ctx.api) {
        (Lane::Api, Some(api)) => api.clone(),
        _ => return serve_http(Guarded::new(stream, slots), peer, ctx.router, ctx.shutdown).await,
    };
    let detached = match stream.detach() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot take a connection off the sessions' runtime");
            return;
        }
    };
    let tracker = ctx.tracker.clone();
    let task = tracker.track_future(async move {
        match S::attach(detached) {
            Ok(stream) => {
                serve_http(Guarded::new(stream, slots), peer, ctx.router, ctx.shutdown).await;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot move a connection to the API runtime");
            }
        }
    });
    drop(api.spawn(task));
}

/// The lane of a plain TCP connection, from the bytes of its first request that have
/// arrived (peeked, so they stay to be read); `None` when the client sent nothing in time or
/// closed. Bytes too few to tell keep it where it is: the lane is where it runs, not what
/// it may do.
async fn first_bytes_lane_plain(tcp: &tokio::net::TcpStream) -> Option<Lane> {
    let mut buf = [0u8; lanes::MAX_PEEK];
    match tokio::time::timeout(HEADER_TIMEOUT, tcp.peek(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(lanes::classify(&buf[..n]).unwrap_or(Lane::Devices)),
        _ => None,
    }
}

/// [`first_bytes_lane_plain`] for a TLS connection (the first decrypted bytes).
async fn first_bytes_lane_tls(tls: &mut TlsStream) -> Option<Lane> {
    let peeked = std::future::poll_fn(|cx| tls.poll_peek(cx, 1));
    match tokio::time::timeout(HEADER_TIMEOUT, peeked).await {
        Ok(Ok(())) => {
            let start = tls.buffered_plaintext();
            if start.is_empty() {
                return None;
            }
            let start = &start[..start.len().min(lanes::MAX_PEEK)];
            Some(lanes::classify(start).unwrap_or(Lane::Devices))
        }
        _ => None,
    }
}

/// HTTP/1.1 or HTTP/2 on one established stream (TLS or, in `off` mode, plain TCP).
async fn serve_http<S>(stream: S, peer: SocketAddr, router: Router, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_headers(64)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        // WebSocket over HTTP/2 (RFC 8441 extended CONNECT), besides HTTP/1.1 upgrades.
        .enable_connect_protocol()
        .max_concurrent_streams(256);
    // Every request carries the peer's address (audit log, per-IP limits).
    let service = TowerToHyperService::new(tower::service_fn(
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let mut router = router.clone();
            async move { tower::Service::call(&mut router, req).await }
        },
    ));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
