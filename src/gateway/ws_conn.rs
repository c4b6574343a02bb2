//! One WebSocket connection's bytes: reading client messages through a buffer on the stack
//! (so an idle connection keeps none), and writing server frames in one flush per batch.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::protocol::{ClientFrame, MAX_CLIENT_FRAME};
use super::wire::{self, Flow, FrameReader, Incoming, WireError};

/// Bytes read from the socket at a time (on the stack of the poll, not kept).
const READ_CHUNK: usize = 4096;

/// What the client sent, parsed.
#[derive(Debug)]
pub enum ClientEvent {
    Frame(ClientFrame),
    /// A text message that is not a valid client frame: the reason.
    Invalid(String),
    Ping(Vec<u8>),
    Pong,
    Binary,
    Close,
}

/// Why reading ended.
#[derive(Debug, thiserror::Error)]
pub enum ReadEnd {
    #[error("the connection closed")]
    Eof,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A WebSocket connection over `S` (TLS or plain TCP, HTTP/1.1 or an HTTP/2 stream).
pub struct WsConn<S> {
    io: S,
    reader: FrameReader,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsConn<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            reader: FrameReader::default(),
        }
    }

    /// Reads what the socket has and returns the client messages in it (possibly none, when
    /// only part of a frame arrived). Pending while nothing arrives.
    pub fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<Result<Vec<ClientEvent>, ReadEnd>> {
        // Not zeroed: the read fills what it reports, and only that is looked at.
        let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut buf);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            return Poll::Ready(Err(ReadEnd::Eof));
        }
        // One read holds at most READ_CHUNK / 6 frames, which bounds the events too.
        let mut events = Vec::new();
        self.reader.feed(read.filled_mut(), MAX_CLIENT_FRAME, |m| {
            events.push(match m {
                Incoming::Text(text) => match ClientFrame::parse(text) {
                    Ok(frame) => ClientEvent::Frame(frame),
                    Err(e) => ClientEvent::Invalid(e.to_string()),
                },
                Incoming::Binary => ClientEvent::Binary,
                Incoming::Ping(p) => ClientEvent::Ping(p.to_vec()),
                Incoming::Pong => ClientEvent::Pong,
                Incoming::Close(_) => ClientEvent::Close,
            });
            Flow::Continue
        })?;
        Poll::Ready(Ok(events))
    }

    /// Writes `bytes` (whole frames) and flushes, within `limit`.
    ///
    /// # Errors
    /// The socket failed, or did not take the bytes in time (`TimedOut`).
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> io::Result<()> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Sends a close frame and ends the connection (TLS close_notify, TCP FIN), within
    /// `limit`; errors are ignored, the connection is going anyway.
    pub async fn close(&mut self, code: u16, reason: &str, limit: Duration) {
        let mut frame = Vec::with_capacity(4 + reason.len());
        wire::put_close(&mut frame, code, reason);
        let _ = self.send(&frame, limit).await;
        let _ = tokio::time::timeout(limit, self.io.shutdown()).await;
    }
}
