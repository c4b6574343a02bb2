//! WebSocket framing (RFC 6455), server side, for a connection that holds no buffer while
//! idle: frames are parsed straight out of the caller's read buffer, and only the bytes of a
//! frame that has not fully arrived, or of a fragmented message, are kept between reads.
//!
//! What a server must refuse is refused: unmasked client frames, reserved bits (we offer no
//! extension), unknown opcodes, fragmented or oversized control frames, a continuation with
//! nothing to continue, a message over the size limit, and text that is not UTF-8.

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Text(&'a str),
    Binary,
    Ping(&'a [u8]),
    Pong,
    /// The client's close frame, with its status code if it sent one.
    Close(Option<u16>),
}

/// Why the client's bytes are not acceptable WebSocket; the connection ends with a close
/// frame carrying [`WireError::close_code`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("client frames must be masked")]
    Unmasked,
    #[error("reserved bits set (no extension was agreed)")]
    Reserved,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("control frames must be whole and at most 125 bytes")]
    BadControl,
    #[error("a continuation frame with no message to continue")]
    StrayContinuation,
    #[error("a new message started before the last one ended")]
    Interleaved,
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("text is not valid UTF-8")]
    NotUtf8,
    #[error("the close frame is malformed")]
    BadClose,
}

impl WireError {
    /// The close code RFC 6455 gives this error.
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooLarge(_) => 1009,
            Self::NotUtf8 => 1007,
            _ => 1002,
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A parsed frame header: where the payload starts and how long it is.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
    payload_len: usize,
}

/// How many bytes the header starting `buf` takes, as far as `buf` tells.
fn header_len_needed(buf: &[u8]) -> usize {
    match buf.get(1).map(|b| b & 0x7F) {
        None => 2,
        Some(126) => 2 + 2 + 4,
        Some(127) => 2 + 8 + 4,
        Some(_) => 2 + 4,
    }
}

/// Parses a frame header at the start of `buf`; `None` if more bytes are needed.
fn header(buf: &[u8], max: usize) -> Result<Option<Header>, WireError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WireError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || b1 & 0x7F > 125 {
                return Err(WireError::BadControl);
            }
        }
        other => return Err(WireError::Opcode(other)),
    }
    if b1 & 0x80 == 0 {
        return Err(WireError::Unmasked);
    }
    let Some((len, at)) = payload_length(buf) else {
        return Ok(None);
    };
    let payload_len = usize::try_from(len).map_err(|_| WireError::TooLarge(max))?;
    if payload_len > max {
        return Err(WireError::TooLarge(max));
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len: at + 4,
        payload_len,
    }))
}

/// The payload length a frame header at the start of `buf` gives (7 bits, or the 16- or
/// 64-bit extended length), and where the bytes after the length start; `None` while the
/// length has not fully arrived. The mask bit is the caller's to check: servers and
/// clients differ on it.
#[must_use]
pub fn payload_length(buf: &[u8]) -> Option<(u64, usize)> {
    match buf.get(1)? & 0x7F {
        126 => {
            let b = buf.get(2..4)?;
            Some((u64::from(u16::from_be_bytes([b[0], b[1]])), 4))
        }
        127 => {
            let b = buf.get(2..10)?;
            let mut be = [0u8; 8];
            be.copy_from_slice(b);
            Some((u64::from_be_bytes(be), 10))
        }
        n => Some((u64::from(n), 2)),
    }
}

/// XORs the client's mask over the payload, eight bytes at a time (every ack a device
/// sends passes through here; the byte loop was 2 % of a fan-out's runtime samples).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let m = u64::from(u32::from_ne_bytes(mask));
    let wide = (m << 32) | m;
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask's phase starts at 0 again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// The reading half of a server-side WebSocket: feed it bytes as they arrive.
#[derive(Default)]
pub struct FrameReader {
    /// The start of a frame that has not fully arrived (empty when idle).
    partial: Vec<u8>,
    /// A fragmented message being put together: its opcode and the payload so far.
    assembling: Option<Box<(u8, Vec<u8>)>>,
}

/// What [`FrameReader::feed`] asks of its caller after each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

impl FrameReader {
    /// Bytes held between reads (0 when idle).
    #[must_use]
    pub fn held(&self) -> usize {
        self.partial.capacity() + self.assembling.as_ref().map_or(0, |a| a.1.capacity())
    }

    /// Parses every complete frame in `input` (after whatever was kept from earlier reads)
    /// and hands each complete message to `each`, until it says [`Flow::Stop`]. Returns
    /// how many bytes of `input` were used; when `each` stopped early, the rest of `input`
    /// has not been looked at and must be fed again. Bytes of an incomplete frame are kept.
    ///
    /// # Errors
    /// A [`WireError`]: the connection must be closed with its close code.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        max_message: usize,
        mut each: impl FnMut(Incoming<'_>) -> Flow,
    ) -> Result<usize, WireError> {
        let mut used = 0;
        // Finish the frame started in an earlier read first, taking no byte past its end.
        while !self.partial.is_empty() {
            let want = match header(&self.partial, max_message)? {
                Some(h) => h.len + h.payload_len,
                None => header_len_needed(&self.partial),
            };
            let take = (want - self.partial.len()).min(input.len() - used);
            self.partial.extend_from_slice(&input[used..used + take]);
            used += take;
            if self.partial.len() < want {
                return Ok(used);
            }
            if let Some(h) = header(&self.partial, max_message)? {
                if self.partial.len() == h.len + h.payload_len {
                    let mut frame = std::mem::take(&mut self.partial);
                    if self.frame(&mut frame, &h, max_message, &mut each)? == Flow::Stop {
                        return Ok(used);
                    }
                }
            }
        }
        loop {
            let rest = &mut input[used..];
            if rest.is_empty() {
                return Ok(used);
            }
            match header(rest, max_message)? {
                Some(h) if rest.len() >= h.len + h.payload_len => {
                    let total = h.len + h.payload_len;
                    let flow = self.frame(&mut rest[..total], &h, max_message, &mut each)?;
                    used += total;
                    if flow == Flow::Stop {
                        return Ok(used);
                    }
                }
                _ => {
                    self.partial.extend_from_slice(rest);
                    return Ok(input.len());
                }
            }
        }
    }

    /// Handles one whole frame (`buf` is exactly the frame).
    fn frame(
        &mut self,
        buf: &mut [u8],
        h: &Header,
        max_message: usize,
        each: &mut impl FnMut(Incoming<'_>) -> Flow,
    ) -> Result<Flow, WireError> {
        let payload = &mut buf[h.len..h.len + h.payload_len];
        unmask(payload, h.mask);
        match h.opcode {
            OP_PING => Ok(each(Incoming::Ping(payload))),
            OP_PONG => Ok(each(Incoming::Pong)),
            OP_CLOSE => match payload.len() {
                0 => Ok(each(Incoming::Close(None))),
                1 => Err(WireError::BadClose),
                _ => {
                    std::str::from_utf8(&payload[2..]).map_err(|_| WireError::NotUtf8)?;
                    Ok(each(Incoming::Close(Some(u16::from_be_bytes([
                        payload[0], payload[1],
                    ])))))
                }
            },
            OP_TEXT | OP_BINARY if h.fin => {
                if self.assembling.is_some() {
                    return Err(WireError::Interleaved);
                }
                deliver(h.opcode, payload, each)
            }
            OP_TEXT | OP_BINARY => {
                if self.assembling.is_some() {
                    return Err(WireError::Interleaved);
                }
                self.assembling = Some(Box::new((h.opcode, payload.to_vec())));
                Ok(Flow::Continue)
            }
            _ => {
                let Some(assembling) = self.assembling.as_mut() else {
                    return Err(WireError::StrayContinuation);
                };
                let (opcode, message) = &mut **assembling;
                if message.len() + payload.len() > max_message {
                    return Err(WireError::TooLarge(max_message));
                }
                message.extend_from_slice(payload);
                if !h.fin {
                    return Ok(Flow::Continue);
                }
                let opcode = *opcode;
                let Some(assembled) = self.assembling.take() else {
                    return Err(WireError::StrayContinuation);
                };
                let (_, mut message) = *assembled;
                deliver(opcode, &mut message, each)
            }
        }
    }
}

fn deliver(
    opcode: u8,
    payload: &mut [u8],
    each: &mut impl FnMut(Incoming<'_>) -> Flow,
) -> Result<Flow, WireError> {
    if opcode == OP_BINARY {
        return Ok(each(Incoming::Binary));
    }
    let text = std::str::from_utf8(payload).map_err(|_| WireError::NotUtf8)?;
    Ok(each(Incoming::Text(text)))
}

/// Appends one unmasked server frame (`opcode` with `payload`) to `out`.
fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(u8::try_from(n).unwrap_or(125)),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a text frame.
pub fn put_text(out: &mut Vec<u8>, text: &[u8]) {
    put_frame(out, OP_TEXT, text);
}

/// Appends a ping with an empty payload.
pub fn put_ping(out: &mut Vec<u8>) {
    put_frame(out, OP_PING, &[]);
}

/// Appends the pong answering a ping with `payload`.
pub fn put_pong(out: &mut Vec<u8>, payload: &[u8]) {
    put_frame(out, OP_PONG, payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit a control frame).
pub fn put_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    put_frame(out, OP_CLOSE, &payload);
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
#[must_use]
pub fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}
