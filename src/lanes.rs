//! Which runtime serves a connection, decided by its first request.
//!
//! Device traffic (the WebSocket upgrade, SSE, long-poll and a device's own calls) stays on
//! the runtime that accepted it, where the sessions live. Everything else (the HTTP API,
//! the console, metrics) moves to a runtime of its own, the API lane. Under a fan-out, every
//! group commit wakes every connected session, so the session runtime's queue is always a
//! thousand tasks deep; a backend's answer queued behind them took 20–30 ms to leave,
//! while the commit it waited for took 2. On a lane of its own it leaves at once.
//!
//! The lane is only where a connection runs, never what it may do: a connection put in the
//! wrong lane (an HTTP/2 connection carrying a WebSocket, a keep-alive connection that
//! starts with an API call and then polls) is served the same, on the other runtime. So the
//! classification may be simple: the method and path of the first HTTP/1.x request, and
//! HTTP/2 (which multiplexes anything) goes to the API lane.

use tokio::runtime::{Handle, Runtime};

use crate::tls::stream::{Detached, TlsStream};

/// Paths whose requests are device traffic (`api::device_route_paths` must list the same).
pub const DEVICE_PATHS: &[&str] = &[
    "/v1/connect",
    "/v1/events",
    "/v1/poll",
    "/v1/ack",
    "/v1/opened",
    "/v1/subscribe",
    "/v1/unsubscribe",
];

/// Most bytes of a request's start looked at; past it, the request is no device's.
pub const MAX_PEEK: usize = 64;

/// Where a connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The runtime that accepted it (device sessions).
    Devices,
    /// The API runtime.
    Api,
}

/// The lane of a connection whose first bytes are `start`; `None` while more bytes are
/// needed to tell (never once `start` holds [`MAX_PEEK`] bytes).
#[must_use]
pub fn classify(start: &[u8]) -> Option<Lane> {
    let Some(space) = start.iter().position(|&b| b == b' ') else {
        // Methods are short; a long run of bytes without a space is not HTTP/1, and hyper
        // answers it wherever it is.
        return (start.len() >= 16).then_some(Lane::Devices);
    };
    let method = &start[..space];
    if method == b"PRI" {
        // The HTTP/2 connection preface (prior knowledge, over plain TCP).
        return Some(Lane::Api);
    }
    let rest = &start[space + 1..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'?' | b'\r' | b'\n'));
    let path = match end {
        Some(end) => &rest[..end],
        None if start.len() >= MAX_PEEK => return Some(Lane::Api),
        None => {
            // No device path starts this way: no need to wait for the rest.
            let could_be = DEVICE_PATHS.iter().any(|p| p.as_bytes().starts_with(rest));
            return (!could_be).then_some(Lane::Api);
        }
    };
    Some(if DEVICE_PATHS.iter().any(|p| p.as_bytes() == path) {
        Lane::Devices
    } else {
        Lane::Api
    })
}

/// A connection that can leave the runtime whose reactor it is registered with.
pub trait Movable: Sized {
    /// The connection registered with no reactor.
    type Detached: Send + 'static;
    /// Deregisters it (call on the runtime it is on).
    ///
    /// # Errors
    /// The reactor refused.
    fn detach(self) -> std::io::Result<Self::Detached>;
    /// Registers it with the runtime this is called in.
    ///
    /// # Errors
    /// The reactor refused, or there is no runtime here.
    fn attach(detached: Self::Detached) -> std::io::Result<Self>;
}

impl Movable for tokio::net::TcpStream {
    type Detached = std::net::TcpStream;
    fn detach(self) -> std::io::Result<Self::Detached> {
        self.into_std()
    }
    fn attach(detached: Self::Detached) -> std::io::Result<Self> {
        Self::from_std(detached)
    }
}

impl Movable for TlsStream {
    type Detached = Detached;
    fn detach(self) -> std::io::Result<Self::Detached> {
        TlsStream::detach(self)
    }
    fn attach(detached: Self::Detached) -> std::io::Result<Self> {
        detached.attach()
    }
}

/// The API lane's runtime: as many worker threads as the machine has cores, named
/// `warbler-api`. Dropping it (from async code too) stops it without waiting; the server
/// drains its connections first.
pub struct ApiRuntime(Option<Runtime>);

impl ApiRuntime {
    /// # Errors
    /// The runtime's threads or its reactor could not be created.
    pub fn start() -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("warbler-api")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// Where to spawn onto it (`None` only while it is being dropped).
    #[must_use]
    pub fn handle(&self) -> Option<Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }
}

impl Drop for ApiRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_requests_stay() {
        for req in [
            "GET /v1/connect HTTP/1.1\r\n",
            "GET /v1/connect?token=x HTTP/1.1\r\n",
            "GET /v1/events?since=3 HTTP/1.1\r\n",
            "GET /v1/poll HTTP/1.1\r\n",
            "POST /v1/ack HTTP/1.1\r\n",
            "POST /v1/unsubscribe HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(req.as_bytes()), Some(Lane::Devices), "{req}");
        }
    }

    #[test]
    fn everything_else_moves() {
        for req in [
            "POST /v1/messages HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n",
            "GET /v1/connections HTTP/1.1\r\n",
            "GET /v1/connectx HTTP/1.1\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(classify(req.as_bytes()), Some(Lane::Api), "{req}");
        }
    }

    #[test]
    fn waits_only_while_a_device_path_is_possible() {
        for partial in ["", "GE", "GET", "GET ", "GET /v1/con", "POST /v1/a"] {
            assert_eq!(classify(partial.as_bytes()), None, "{partial:?}");
        }
        // Already no device path can follow.
        assert_eq!(classify(b"POST /v1/m"), Some(Lane::Api));
        assert_eq!(classify(b"GET /c"), Some(Lane::Api));
    }

    #[test]
    fn never_waits_past_the_bound() {
        for fill in [b'A', b'/', b' ', b'x'] {
            for head in ["", "GET ", "GET /v1/connect", "POST /v1/"] {
                let mut bytes = head.as_bytes().to_vec();
                bytes.resize(MAX_PEEK, fill);
                assert!(classify(&bytes).is_some(), "{head:?} + {fill}");
            }
        }
    }

    #[test]
    fn the_device_paths_are_the_device_routes() {
        let mut routes = crate::api::device_route_paths();
        routes.sort_unstable();
        let mut listed = DEVICE_PATHS.to_vec();
        listed.sort_unstable();
        assert_eq!(routes, listed);
    }
}
