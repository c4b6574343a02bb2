//! A benchmark device's WebSocket written for the load generator's CPU budget: the upgrade
//! request by hand, then server frames parsed in place out of one read buffer kept for the
//! connection's life (no allocation and no zeroing per frame or per read), and masked
//! client frames written from one reused buffer.
//!
//! The fan-out generator shares the two cores with the server it measures. With
//! tokio-tungstenite it spent about 1.4–1.6 µs of CPU per delivery, more than the server
//! (about 1.2 µs): a message allocated per frame, its read buffer zeroed per read. What a
//! client must check of a server's frames is checked: masked or reserved-bit frames,
//! unknown opcodes and text that is not UTF-8 are errors. Fragmented messages are refused
//! as well (Warbler's server never fragments: one message is one frame).

use std::net::IpAddr;
use std::ops::Range;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::io::Io;
use super::net::Endpoint;
use crate::gateway::wire::{accept_key, payload_length};

/// Largest frame accepted from the server; the read buffer grows to it at most.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Largest upgrade response read.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Why the server's bytes are not a WebSocket stream this client takes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("server frames must not be masked")]
    Masked,
    #[error("reserved bits set")]
    Reserved,
    #[error("fragmented message (the server sends one frame per message)")]
    Fragmented,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("frame of {0} bytes, over the {MAX_FRAME}-byte limit")]
    TooLarge(u64),
    #[error("text is not valid UTF-8")]
    NotUtf8,
}

/// A whole frame taken from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text message; its bytes are [`LeanWs::text`] of the range until the next read.
    Text(Range<usize>),
    /// A ping (its pong is queued: see [`LeanWs::flush`]), a pong or a binary message.
    Control,
    /// The server's close frame.
    Close,
}

/// A device's WebSocket over TLS or plain TCP.
pub struct LeanWs {
    io: Io,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Frames to send (masked), written by [`Self::flush`].
    out: Vec<u8>,
    /// xorshift64 state for frame masks.
    rng: u64,
}

impl LeanWs {
    /// Connects from `local` (any address with `None`), upgrades with the device token in
    /// the `Authorization` header, and waits for `welcome`. `read_buffer` is the buffer's
    /// starting size (it grows for a larger frame, up to [`MAX_FRAME`]).
    ///
    /// # Errors
    /// Transport failures, a refused upgrade, a bad accept key, or no `welcome`.
    pub async fn connect(
        endpoint: &Endpoint,
        token: &str,
        local: Option<IpAddr>,
        read_buffer: usize,
    ) -> anyhow::Result<Self> {
        let io = endpoint.device_io(local).await?;
        let key_bytes: [u8; 16] = rand::random();
        let key = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(key_bytes)
        };
        let mut ws = Self {
            io,
            buf: vec![0; read_buffer.clamp(1024, MAX_FRAME)],
            start: 0,
            end: 0,
            out: Vec::new(),
            rng: rand::random::<u64>() | 1,
        };
        let request = format!(
            "GET /v1/connect HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n",
            endpoint.authority()
        );
        ws.io.write_all(request.as_bytes()).await?;
        ws.io.flush().await?;
        let head_len = ws.read_response_head().await?;
        check_upgrade(&ws.buf[..head_len], &accept_key(key.as_bytes()))?;
        ws.start = head_len;
        loop {
            match ws.next_frame().await? {
                Some(Frame::Text(range)) => {
                    let text = ws.text(range)?;
                    let v: serde_json::Value = serde_json::from_str(text).context("first frame")?;
                    if v["type"] == "welcome" {
                        return Ok(ws);
                    }
                    bail!("expected welcome, got {text}");
                }
                Some(Frame::Control) => ws.flush().await?,
                Some(Frame::Close) | None => bail!("closed before welcome"),
            }
        }
    }

    /// Reads until the end of the HTTP response head; returns its length.
    async fn read_response_head(&mut self) -> anyhow::Result<usize> {
        loop {
            if let Some(at) = memchr::memmem::find(&self.buf[..self.end], b"\r\n\r\n") {
                return Ok(at + 4);
            }
            if self.end >= MAX_RESPONSE_HEAD.min(self.buf.len()) {
                bail!("upgrade response head over {} bytes", self.end);
            }
            let n = self.io.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                bail!("connection closed during the upgrade");
            }
            self.end += n;
        }
    }

    /// The next whole frame already read, without I/O. Ranges given out before are invalid
    /// after the next [`Self::fill`].
    ///
    /// # Errors
    /// A frame this client refuses ([`FrameError`]).
    pub fn buffered(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((header, len)) = parse_header(&self.buf[self.start..self.end])? else {
            return Ok(None);
        };
        let at = self.start + header;
        if self.end - at < len {
            return Ok(None);
        }
        let opcode = self.buf[self.start] & 0x0F;
        self.start = at + len;
        match opcode {
            OP_TEXT => Ok(Some(Frame::Text(at..at + len))),
            OP_CLOSE => Ok(Some(Frame::Close)),
            OP_PING => {
                let payload = self.buf[at..at + len].to_vec();
                self.queue(OP_PONG, &payload);
                Ok(Some(Frame::Control))
            }
            OP_PONG | OP_BINARY => Ok(Some(Frame::Control)),
            other => Err(FrameError::Opcode(other)),
        }
    }

    /// The text of a [`Frame::Text`] range, checked to be UTF-8.
    ///
    /// # Errors
    /// [`FrameError::NotUtf8`].
    pub fn text(&self, range: Range<usize>) -> Result<&str, FrameError> {
        std::str::from_utf8(&self.buf[range]).map_err(|_| FrameError::NotUtf8)
    }

    /// Reads more bytes from the socket (waiting for them); `false` at the end of the
    /// stream. Moves a partial frame to the front of the buffer, growing the buffer when
    /// that frame is larger than it.
    ///
    /// # Errors
    /// I/O errors, or a frame over [`MAX_FRAME`].
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            let need = match parse_header(&self.buf[self.start..self.end])? {
                Some((header, len)) => header + len,
                None => 14,
            };
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next frame, reading as needed; `None` at the end of the stream.
    ///
    /// # Errors
    /// As [`Self::buffered`] and [`Self::fill`].
    pub async fn next_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Queues a masked text frame; [`Self::flush`] sends it.
    pub fn queue_text(&mut self, text: &[u8]) {
        self.queue(OP_TEXT, text);
    }

    /// Writes whatever is queued (frames, pongs).
    ///
    /// # Errors
    /// I/O errors.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        self.io.flush().await
    }

    /// Whether frames wait in the send buffer.
    #[must_use]
    pub fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Sends a close frame (1000) and shuts the stream down, giving up after a second.
    pub async fn close(mut self) {
        self.queue(OP_CLOSE, &1000u16.to_be_bytes());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            self.flush().await?;
            self.io.shutdown().await
        })
        .await;
    }

    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mask = self.rng.to_be_bytes();
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        put_masked(&mut self.out, opcode, payload, mask);
    }
}

/// Checks the upgrade response: status 101 and the expected `Sec-WebSocket-Accept`.
fn check_upgrade(head: &[u8], accept: &str) -> anyhow::Result<()> {
    let head = std::str::from_utf8(head).context("upgrade response is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {status}");
    }
    let got = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim())
    });
    if got != Some(accept) {
        bail!("bad Sec-WebSocket-Accept: {got:?}");
    }
    Ok(())
}

/// Parses a server frame header at the start of `buf`: (header length, payload length),
/// or `None` while more bytes are needed.
fn parse_header(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    // Not final, or a continuation: a fragment.
    if b0 & 0x80 == 0 || b0.trailing_zeros() >= 4 {
        return Err(FrameError::Fragmented);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let Some((len, header)) = payload_length(buf) else {
        return Ok(None);
    };
    match usize::try_from(len) {
        Ok(n) if n <= MAX_FRAME - header => Ok(Some((header, n))),
        _ => Err(FrameError::TooLarge(len)),
    }
}

/// Appends a final, masked client frame.
fn put_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if let Ok(small @ 0..=125) = u8::try_from(n) {
        out.push(0x80 | small);
    } else if let Ok(mid) = u16::try_from(n) {
        out.push(0x80 | 0x7E);
        out.extend_from_slice(&mid.to_be_bytes());
    } else {
        out.push(0x80 | 0x7F);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(payload);
    // Eight bytes at a time (an ack frame of 40 ids is about 1.3 KB).
    let mut wide = [0u8; 8];
    wide[..4].copy_from_slice(&mask);
    wide[4..].copy_from_slice(&mask);
    let wide = u64::from_ne_bytes(wide);
    let mut chunks = out[at..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::{put_text, Flow, FrameReader, Incoming};

    #[test]
    fn server_frames_parse_whole_and_wait_for_the_rest() {
        let mut out = Vec::new();
        put_text(&mut out, br#"{"type":"welcome"}"#);
        let big = "x".repeat(70_000);
        put_text(&mut out, big.as_bytes());
        assert_eq!(parse_header(&out[..1]), Ok(None));
        assert_eq!(parse_header(&out), Ok(Some((2, 18))));
        let second = &out[20..];
        assert_eq!(parse_header(&second[..5]), Ok(None));
        assert_eq!(parse_header(second), Ok(Some((10, 70_000))));
    }

    #[test]
    fn refused_frames_are_errors() {
        assert_eq!(parse_header(&[0x81, 0x85]), Err(FrameError::Masked));
        assert_eq!(parse_header(&[0xC1, 0x01]), Err(FrameError::Reserved));
        assert_eq!(parse_header(&[0x01, 0x01]), Err(FrameError::Fragmented));
        assert_eq!(parse_header(&[0x80, 0x01]), Err(FrameError::Fragmented));
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert_eq!(parse_header(&huge), Err(FrameError::TooLarge(u64::MAX)));
    }

    #[test]
    fn masked_frames_are_what_the_server_reads() {
        for len in [0usize, 5, 7, 8, 9, 125, 126, 1_000, 1_003, 70_000] {
            let text = "a".repeat(len);
            let mut out = Vec::new();
            put_masked(&mut out, OP_TEXT, text.as_bytes(), [1, 2, 3, 4]);
            let mut reader = FrameReader::default();
            let mut got = None;
            reader
                .feed(&mut out, 1 << 20, |m| {
                    if let Incoming::Text(t) = m {
                        got = Some(t.to_owned());
                    }
                    Flow::Continue
                })
                .expect("valid frame");
            assert_eq!(got.as_deref(), Some(text.as_str()), "length {len}");
        }
    }

    #[test]
    fn the_upgrade_answer_is_checked() {
        let ok = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                  sec-websocket-accept: abc=\r\n\r\n";
        assert!(check_upgrade(ok.as_bytes(), "abc=").is_ok());
        assert!(check_upgrade(ok.as_bytes(), "xyz=").is_err());
        let refused = "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        assert!(check_upgrade(refused.as_bytes(), "abc=").is_err());
    }
}
