//! Minimal MQTT 3.1.1 over plain TCP (the packets a subscriber and a publisher need:
//! CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH, PUBACK, PINGRESP), written by hand so that
//! no client library's queues sit between the socket and the measure.

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::{connect, STEP_TIMEOUT};

/// Largest packet accepted from the broker (the benchmark's are tiny).
const MAX_PACKET: usize = 1 << 20;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = u8::try_from(n % 128).unwrap_or(0);
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s[..usize::from(len)]);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// One PUBLISH packet (packet id used only when `qos` > 0).
#[must_use]
pub fn publish_packet(topic: &str, payload: &[u8], qos: u8, pid: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// Parses one whole packet off the front of `buf`: (first byte, body). `None`: need more.
///
/// # Errors
/// A malformed length or a packet over [`MAX_PACKET`].
pub fn take_packet(buf: &mut BytesMut) -> anyhow::Result<Option<(u8, BytesMut)>> {
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            bail!("malformed MQTT remaining length");
        }
    }
    if len > MAX_PACKET {
        bail!("MQTT packet of {len} bytes");
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(i);
    Ok(Some((first, buf.split_to(len))))
}

/// Reads until one whole packet is in `buf`.
async fn read_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<(u8, BytesMut)> {
    loop {
        if let Some(p) = take_packet(buf)? {
            return Ok(p);
        }
        if stream.read_buf(buf).await.context("read")? == 0 {
            bail!("broker closed the connection");
        }
    }
}

/// A connected client: CONNECT (clean session, keepalive off) answered by CONNACK, then,
/// with `topic`, SUBSCRIBE at `qos` answered by SUBACK.
pub struct Client {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Client {
    /// # Errors
    /// Connect failure, refusal, or no answer within the step timeout.
    pub async fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        topic: Option<&str>,
        qos: u8,
    ) -> anyhow::Result<Self> {
        let mut stream = connect(addr, source).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let steps = async {
            let mut body = Vec::with_capacity(32);
            put_str(&mut body, b"MQTT");
            body.extend_from_slice(&[4, 0x02, 0, 0]); // level 4, clean session, keepalive 0
            put_str(&mut body, client_id.as_bytes());
            stream.write_all(&packet(0x10, &body)).await?;
            let (first, body) = read_packet(&mut stream, &mut buf).await?;
            if first != 0x20 || body.get(1) != Some(&0) {
                bail!("CONNACK refused: {first:#x} {:?}", &body[..]);
            }
            if let Some(topic) = topic {
                let mut body = vec![0, 1];
                put_str(&mut body, topic.as_bytes());
                body.push(qos);
                stream.write_all(&packet(0x82, &body)).await?;
                let (first, body) = read_packet(&mut stream, &mut buf).await?;
                if first != 0x90 || body.get(2).is_none_or(|&rc| rc > 2) {
                    bail!("SUBACK refused: {first:#x} {:?}", &body[..]);
                }
            }
            Ok(())
        };
        tokio::time::timeout(STEP_TIMEOUT, steps)
            .await
            .map_err(|_| anyhow!("MQTT handshake timed out"))??;
        Ok(Self { stream, buf })
    }

    /// Waits for the next read and hands the payload of every PUBLISH now buffered to `f`;
    /// PUBACKs those that need one (one write per batch). Returns the number of PUBLISHes.
    ///
    /// # Errors
    /// The connection closed or broke, or a malformed packet.
    pub async fn recv_batch(&mut self, f: &mut (dyn FnMut(&[u8]) + Send)) -> anyhow::Result<usize> {
        if self.stream.read_buf(&mut self.buf).await.context("read")? == 0 {
            bail!("broker closed the connection");
        }
        let mut acks = Vec::new();
        let mut n = 0;
        while let Some((first, body)) = take_packet(&mut self.buf)? {
            if first >> 4 != 3 {
                continue; // PINGRESP and the like
            }
            let qos = (first >> 1) & 3;
            let tlen = usize::from(u16::from_be_bytes([
                *body.first().unwrap_or(&0),
                *body.get(1).unwrap_or(&0),
            ]));
            let mut at = 2 + tlen;
            if qos > 0 {
                let pid = body
                    .get(at..at + 2)
                    .ok_or_else(|| anyhow!("short PUBLISH"))?;
                acks.extend_from_slice(&[0x40, 2, pid[0], pid[1]]);
                at += 2;
            }
            f(body.get(at..).ok_or_else(|| anyhow!("short PUBLISH"))?);
            n += 1;
        }
        if !acks.is_empty() {
            self.stream.write_all(&acks).await.context("write PUBACK")?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_split_across_reads() {
        let payload = vec![b'x'; 300]; // remaining length needs two bytes
        let p = publish_packet("bench", &payload, 1, 7);
        assert_eq!(&p[..3], &[0x32, 0xb5, 0x02]); // 2 + 5 + 2 + 300 = 309
        let mut buf = BytesMut::from(&p[..100]);
        assert!(take_packet(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&p[100..]);
        buf.extend_from_slice(&[0x40, 2, 0, 7]);
        let (first, body) = take_packet(&mut buf).unwrap().unwrap();
        assert_eq!(first, 0x32);
        assert_eq!(body.len(), 309);
        assert_eq!(&body[2..7], b"bench");
        assert_eq!(&body[7..9], &[0, 7]);
        let (first, _) = take_packet(&mut buf).unwrap().unwrap();
        assert_eq!(first, 0x40);
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_malformed_length() {
        let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(take_packet(&mut buf).is_err());
    }
}
