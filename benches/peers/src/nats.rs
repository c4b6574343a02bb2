//! Minimal NATS core protocol over plain TCP (INFO, CONNECT, SUB, PUB, MSG, PING/PONG),
//! written by hand so that no client library's queues sit between the socket and the measure.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::{connect, STEP_TIMEOUT};

/// Longest control line or payload accepted (the benchmark's are tiny; INFO is ~1 KiB).
const MAX_LINE: usize = 1 << 20;

/// What the server sent.
pub enum Op {
    Msg(BytesMut),
    Ping,
    Pong,
    Other,
}

/// Parses one whole operation off the front of `buf`. `None`: need more bytes.
///
/// # Errors
/// `-ERR` from the server, or a malformed or oversized operation.
pub fn take_op(buf: &mut BytesMut) -> anyhow::Result<Option<Op>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            bail!("NATS control line over {MAX_LINE} bytes");
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    if line.starts_with(b"MSG ") {
        let len: usize = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("malformed MSG line"))?;
        if len > MAX_LINE {
            bail!("NATS message of {len} bytes");
        }
        if buf.len() < eol + 2 + len + 2 {
            return Ok(None);
        }
        buf.advance(eol + 2);
        let payload = buf.split_to(len);
        buf.advance(2);
        return Ok(Some(Op::Msg(payload)));
    }
    let op = if line == b"PING" {
        Op::Ping
    } else if line == b"PONG" {
        Op::Pong
    } else if line.starts_with(b"-ERR") {
        bail!("server: {}", String::from_utf8_lossy(line));
    } else {
        Op::Other // INFO, +OK
    };
    buf.advance(eol + 2);
    Ok(Some(op))
}

/// A connected client: INFO read, CONNECT sent, optionally `SUB subject 1`, then PING
/// answered by PONG (so the subscription is in place when `open` returns).
pub struct Client {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Client {
    /// # Errors
    /// Connect failure, `-ERR`, or no answer within the step timeout.
    pub async fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        subject: Option<&str>,
    ) -> anyhow::Result<Self> {
        let stream = connect(addr, source).await?;
        let mut c = Self {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        let steps = async {
            let mut hello = String::from(
                "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"warbler-bench\"}\r\n",
            );
            if let Some(s) = subject {
                let _ = write!(hello, "SUB {s} 1\r\n");
            }
            hello.push_str("PING\r\n");
            c.stream.write_all(hello.as_bytes()).await?;
            c.wait_pong().await
        };
        tokio::time::timeout(STEP_TIMEOUT, steps)
            .await
            .map_err(|_| anyhow!("NATS handshake timed out"))??;
        Ok(c)
    }

    /// Reads until the server's PONG (answering its PINGs meanwhile; messages are dropped).
    ///
    /// # Errors
    /// The connection closed or `-ERR`.
    pub async fn wait_pong(&mut self) -> anyhow::Result<()> {
        loop {
            while let Some(op) = take_op(&mut self.buf)? {
                match op {
                    Op::Pong => return Ok(()),
                    Op::Ping => self.stream.write_all(b"PONG\r\n").await?,
                    Op::Msg(_) | Op::Other => {}
                }
            }
            if self.stream.read_buf(&mut self.buf).await.context("read")? == 0 {
                bail!("server closed the connection");
            }
        }
    }

    /// Waits for the next read and hands the payload of every MSG now buffered to `f`;
    /// answers PINGs. Returns the number of MSGs.
    ///
    /// # Errors
    /// The connection closed or broke, or `-ERR`.
    pub async fn recv_batch(&mut self, f: &mut (dyn FnMut(&[u8]) + Send)) -> anyhow::Result<usize> {
        if self.stream.read_buf(&mut self.buf).await.context("read")? == 0 {
            bail!("server closed the connection");
        }
        let mut n = 0;
        let mut pongs = 0;
        while let Some(op) = take_op(&mut self.buf)? {
            match op {
                Op::Msg(p) => {
                    f(&p);
                    n += 1;
                }
                Op::Ping => pongs += 1,
                Op::Pong | Op::Other => {}
            }
        }
        for _ in 0..pongs {
            self.stream.write_all(b"PONG\r\n").await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_waits_for_its_whole_payload() {
        let mut buf = BytesMut::from(&b"INFO {}\r\nMSG bench 1 5\r\nhel"[..]);
        assert!(matches!(take_op(&mut buf).unwrap(), Some(Op::Other)));
        assert!(take_op(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"lo\r\nPING\r\n");
        match take_op(&mut buf).unwrap() {
            Some(Op::Msg(p)) => assert_eq!(&p[..], b"hello"),
            _ => panic!("expected MSG"),
        }
        assert!(matches!(take_op(&mut buf).unwrap(), Some(Op::Ping)));
        assert!(buf.is_empty());
    }

    #[test]
    fn err_is_an_error() {
        let mut buf = BytesMut::from(&b"-ERR 'Authorization Violation'\r\n"[..]);
        assert!(take_op(&mut buf).is_err());
    }
}
