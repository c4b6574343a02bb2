//! TCP connections from a chosen loopback source address (127.0.0.2, .3, … in turn, as
//! `warbler bench` does), so ephemeral ports never run out; every connect is bounded in time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpSocket, TcpStream};

/// How long one TCP connect, or one protocol handshake, may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Source address for connection `i` when spreading over `sources` addresses (0: none).
#[must_use]
pub fn source_for(i: usize, sources: u8) -> Option<IpAddr> {
    if sources == 0 {
        return None;
    }
    let k = u8::try_from(i % usize::from(sources)).unwrap_or(0);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k)))
}

/// Connects to `addr` from `source` (port chosen by the kernel), `TCP_NODELAY` set.
///
/// # Errors
/// Bind or connect failure, or no answer within [`STEP_TIMEOUT`].
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4().context("socket")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = tokio::time::timeout(STEP_TIMEOUT, socket.connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true).context("nodelay")?;
    Ok(stream)
}
