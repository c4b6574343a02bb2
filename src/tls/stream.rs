//! A TLS server stream over rustls's unbuffered API that holds no buffer while it is idle.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer for the connection's whole life,
//! and `tokio-rustls` adds its own state on top. An idle push connection (most of them, most
//! of the time) needs none of that: here the ciphertext and plaintext buffers are taken from a
//! small per-thread pool only while bytes move, and given back as soon as they are empty, so
//! an idle connection costs the socket, the rustls state machine and a few words.
//!
//! The handshake, and a TLS 1.2 connection for its whole life, run on rustls's unbuffered
//! connection. A TLS 1.3 connection then moves to [`Records`](super::records): rustls's
//! cipher objects and key schedule without the rest of its connection state.
//!
//! Reads decrypt every complete record in the receive buffer (at most one receive buffer's
//! worth, so the plaintext held is bounded too). Writes are encrypted into a send buffer of
//! at most [`TX_HIGH`] bytes and go to the socket on flush, so several small frames written
//! back to back leave in one `write` call.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::records::{RecordError, Records};

mod own_records;

/// Size of a receive buffer: one largest TLS record (16 KiB of payload, 256 bytes of
/// expansion, the 5-byte header) fits.
const RX_SIZE: usize = 16 * 1024 + 256 + 5 + 123;
/// Largest receive buffer, reached only while a handshake message spans records.
const RX_MAX: usize = 64 * 1024 + RX_SIZE;
/// Encrypted bytes a writer may queue before `poll_write` first flushes them.
pub const TX_HIGH: usize = 64 * 1024;
/// Largest plaintext a single `poll_write` encrypts.
const WRITE_CHUNK: usize = 16 * 1024;
/// Buffers a thread keeps for reuse, per kind.
const POOL_KEEP: usize = 8;

thread_local! {
    static RX_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static TX_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A zero-filled receive buffer of `RX_SIZE` bytes.
fn take_rx() -> Vec<u8> {
    RX_POOL
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; RX_SIZE])
}

fn give_rx(buf: Vec<u8>) {
    if buf.len() == RX_SIZE {
        RX_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOL_KEEP {
                pool.push(buf);
            }
        });
    }
}

/// An empty send buffer (its capacity kept from earlier use).
fn take_tx() -> Vec<u8> {
    TX_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

fn give_tx(mut buf: Vec<u8>) {
    if buf.capacity() != 0 && buf.capacity() <= 2 * TX_HIGH {
        buf.clear();
        TX_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOL_KEEP {
                pool.push(buf);
            }
        });
    }
}

fn tls_error(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What the state machine needs after processing the buffered ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// More ciphertext from the peer (handshake or application data).
    Read,
    /// The peer's close_notify was seen and ours sent: nothing more will come.
    Closed,
}

/// What to encrypt once the connection may send application data.
enum Out<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// The buffers of a connection while bytes move; dropped when all are empty.
#[derive(Default)]
struct Bufs {
    /// Ciphertext received and not yet processed: `rx[..rx_used]`.
    rx: Vec<u8>,
    rx_used: usize,
    /// Plaintext decrypted and not yet read: `plain[plain_pos..]`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Ciphertext to send: `tx[tx_pos..]`.
    tx: Vec<u8>,
    tx_pos: usize,
}

impl Bufs {
    fn is_idle(&self) -> bool {
        self.rx_used == 0 && self.plain_pos >= self.plain.len() && self.tx_pos >= self.tx.len()
    }
}

/// What protects the connection's records.
enum Engine {
    /// rustls's connection: the handshake, and TLS 1.2 throughout.
    Rustls(Box<UnbufferedServerConnection>),
    /// TLS 1.3 after the handshake.
    Records(Box<Records>),
}

fn record_error(e: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A server-side TLS connection on a TCP socket.
pub struct TlsStream {
    tcp: TcpStream,
    engine: Engine,
    /// `None` while idle.
    bufs: Option<Box<Bufs>>,
    /// The peer sent close_notify or closed TCP: reads give end of file.
    read_eof: bool,
    close_sent: bool,
}

impl TlsStream {
    /// Runs the server side of a TLS handshake on `tcp` to its end (no timeout of its own:
    /// the caller bounds it).
    ///
    /// # Errors
    /// The handshake failed (a TLS alert is sent where rustls produced one), or the socket did.
    pub async fn accept(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let extractable = config.enable_secret_extraction;
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            tcp,
            engine: Engine::Rustls(Box::new(conn)),
            bufs: None,
            read_eof: false,
            close_sent: false,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        if extractable {
            stream = stream.into_records()?;
        }
        Ok(stream)
    }

    /// A finished TLS 1.3 handshake hands its keys to [`Records`]; anything else stays.
    fn into_records(self) -> io::Result<Self> {
        let Engine::Rustls(conn) = self.engine else {
            return Ok(self);
        };
        if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) || conn.is_handshaking() {
            return Ok(Self {
                engine: Engine::Rustls(conn),
                ..self
            });
        }
        let records = Records::from_handshake(*conn).map_err(record_error)?;
        Ok(Self {
            engine: Engine::Records(Box::new(records)),
            ..self
        })
    }

    /// The protocol agreed by ALPN, if any.
    #[must_use]
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.engine {
            Engine::Rustls(conn) => conn.alpn_protocol(),
            Engine::Records(records) => records.alpn_protocol(),
        }
    }

    /// Whether the connection's records are protected by [`Records`] (TLS 1.3 after the
    /// handshake) rather than rustls's connection.
    #[must_use]
    pub fn uses_own_records(&self) -> bool {
        matches!(self.engine, Engine::Records(_))
    }

    /// Lets one sending key seal only this many records before a KeyUpdate replaces it.
    #[cfg(test)]
    pub(super) fn set_tx_key_budget(&mut self, records: u64) {
        if let Engine::Records(r) = &mut self.engine {
            r.set_tx_budget(records);
        }
    }

    /// Bytes held in buffers right now (0 for an idle connection).
    #[must_use]
    pub fn buffered_capacity(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| {
            std::mem::size_of::<Bufs>() + b.rx.capacity() + b.plain.capacity() + b.tx.capacity()
        })
    }

    /// Decrypted bytes received and not yet read (they stay for the next read).
    #[must_use]
    pub fn buffered_plaintext(&self) -> &[u8] {
        self.bufs
            .as_ref()
            .map_or(&[][..], |b| b.plain.get(b.plain_pos..).unwrap_or_default())
    }

    /// Ready once at least `want` bytes of plaintext are buffered, or the peer will send no
    /// more; nothing is consumed (see [`Self::buffered_plaintext`]). What it takes to get
    /// there (a post-handshake message to send, an alert) happens as in a read.
    ///
    /// # Errors
    /// The socket or the TLS state machine failed, as a read would.
    pub fn poll_peek(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<()>> {
        loop {
            if self.buffered_plaintext().len() >= want || self.read_eof {
                return Poll::Ready(Ok(()));
            }
            if self.rx_used() > 0 {
                let next = self.process(Out::Nothing)?;
                if self.tx_pending() > 0 {
                    if let Poll::Ready(Err(e)) = self.poll_flush_tx(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                if self.buffered_plaintext().len() >= want {
                    return Poll::Ready(Ok(()));
                }
                if next == Next::Closed {
                    self.read_eof = true;
                    continue;
                }
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Takes the connection off this runtime's reactor, to carry it to another runtime
    /// ([`Detached::attach`]); buffered bytes, in either direction, go with it.
    ///
    /// # Errors
    /// The socket could not be deregistered.
    pub fn detach(self) -> io::Result<Detached> {
        Ok(Detached {
            tcp: self.tcp.into_std()?,
            engine: self.engine,
            bufs: self.bufs,
            read_eof: self.read_eof,
            close_sent: self.close_sent,
        })
    }

    fn tx_pending(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.tx.len() - b.tx_pos)
    }

    fn rx_used(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.rx_used)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = self.process(Out::Nothing)?;
            if self.tx_pending() > 0 {
                ready!(self.poll_flush_tx(cx))?;
            }
            let Engine::Rustls(conn) = &self.engine else {
                return Poll::Ready(Ok(()));
            };
            if !conn.is_handshaking() {
                self.release_idle();
                return Poll::Ready(Ok(()));
            }
            if next == Next::Closed || self.read_eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            ready!(self.poll_fill(cx))?;
            if self.read_eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Runs the state machine over the buffered ciphertext: decrypted application data goes
    /// to `plain`, handshake messages and alerts to `tx`, and `out` is encrypted once
    /// application data may be sent. Returns what is needed next.
    fn process(&mut self, mut out: Out<'_>) -> io::Result<Next> {
        let result = self.process_inner(&mut out);
        if result.is_err() {
            self.send_pending_alert();
        }
        result
    }

    fn process_inner(&mut self, out: &mut Out<'_>) -> io::Result<Next> {
        if matches!(self.engine, Engine::Records(_)) {
            return self.process_records(out);
        }
        loop {
            let Self {
                engine: Engine::Rustls(conn),
                bufs,
                read_eof,
                close_sent,
                ..
            } = self
            else {
                return Err(io::Error::other("TLS connection moved to its record layer"));
            };
            let Bufs {
                rx,
                rx_used,
                plain,
                tx,
                ..
            } = &mut **bufs.get_or_insert_with(Box::default);
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(&mut rx[..*rx_used]);
            let next = match state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    if tx.capacity() == 0 {
                        *tx = take_tx();
                    }
                    let start = tx.len();
                    tx.resize(start + 1024, 0);
                    let written = match encode.encode(&mut tx[start..]) {
                        Ok(n) => n,
                        Err(EncodeError::InsufficientSize(e)) => {
                            tx.resize(start + e.required_size, 0);
                            encode.encode(&mut tx[start..]).map_err(tls_error)?
                        }
                        Err(e) => return Err(tls_error(e)),
                    };
                    tx.truncate(start + written);
                    None
                }
                // The encoded bytes are in `tx` and leave on the next flush, before any read
                // could wait on the peer's answer to them.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => {
                    if !matches!(out, Out::Nothing) {
                        return Err(io::Error::new(
                            io::ErrorKind::NotConnected,
                            "TLS handshake not complete",
                        ));
                    }
                    Some(Next::Read)
                }
                ConnectionState::PeerClosed => {
                    *read_eof = true;
                    None
                }
                ConnectionState::Closed => {
                    if matches!(out, Out::Data(_)) {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                    Some(Next::Closed)
                }
                ConnectionState::WriteTraffic(mut write) => {
                    match std::mem::replace(out, Out::Nothing) {
                        Out::Nothing => {}
                        Out::Data(data) => {
                            if tx.capacity() == 0 {
                                *tx = take_tx();
                            }
                            let start = tx.len();
                            // Each record adds a header, a tag and a content-type byte.
                            let records = data.len() / (16 * 1024) + 1;
                            tx.resize(start + data.len() + records * 64, 0);
                            let written = match write.encrypt(data, &mut tx[start..]) {
                                Ok(n) => n,
                                Err(EncryptError::InsufficientSize(e)) => {
                                    tx.resize(start + e.required_size, 0);
                                    write.encrypt(data, &mut tx[start..]).map_err(tls_error)?
                                }
                                Err(e) => return Err(tls_error(e)),
                            };
                            tx.truncate(start + written);
                        }
                        Out::CloseNotify => {
                            if tx.capacity() == 0 {
                                *tx = take_tx();
                            }
                            let start = tx.len();
                            tx.resize(start + 64, 0);
                            let written = write.queue_close_notify(&mut tx[start..]);
                            tx.truncate(start + written.unwrap_or(0));
                            *close_sent = true;
                        }
                    }
                    Some(Next::Read)
                }
                ConnectionState::ReadEarlyData(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS early data is not accepted",
                    ))
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS connection state",
                    ))
                }
            };
            if discard > 0 {
                rx.copy_within(discard..*rx_used, 0);
                *rx_used -= discard;
            }
            if let Some(next) = next {
                return Ok(next);
            }
        }
    }

    /// After a TLS error, sends the alert rustls queued for it, if the socket takes it now.
    fn send_pending_alert(&mut self) {
        let Engine::Rustls(conn) = &mut self.engine else {
            return; // `process_records` sends its own
        };
        for _ in 0..4 {
            let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = state else {
                break;
            };
            let mut buf = [0u8; 64];
            if let Ok(n) = encode.encode(&mut buf) {
                let _ = self.tcp.try_write(&buf[..n]);
            }
        }
    }

    /// Reads more ciphertext from the socket into `rx`. Ready once some bytes arrived or the
    /// peer closed TCP (`read_eof`).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Readiness first, so an idle connection takes no buffer from the pool.
        ready!(self.tcp.poll_read_ready(cx))?;
        let b = self.bufs.get_or_insert_with(Box::default);
        if b.rx.is_empty() {
            b.rx = take_rx();
        } else if b.rx_used == b.rx.len() {
            // A handshake message spanning records: grow, within bounds.
            if b.rx.len() >= RX_MAX {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS handshake message too large",
                )));
            }
            let grown = (b.rx.len() * 2).min(RX_MAX);
            b.rx.resize(grown, 0);
        }
        // Through `AsyncRead`, not `try_read`: a read that leaves the buffer partly empty
        // then clears the socket's readiness, so the next call waits for epoll instead of
        // spending a `recvfrom` to learn the socket is empty (one per request or frame on a
        // busy connection).
        let mut rb = ReadBuf::new(&mut b.rx[b.rx_used..]);
        match Pin::new(&mut self.tcp).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    self.read_eof = true;
                } else {
                    b.rx_used += n;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.release_idle();
                Poll::Pending
            }
        }
    }

    /// Writes `tx` to the socket until it is empty, then gives the buffer back.
    fn poll_flush_tx(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(b) = self.bufs.as_mut() {
            while b.tx_pos < b.tx.len() {
                let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &b.tx[b.tx_pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                b.tx_pos += n;
            }
            b.tx_pos = 0;
            give_tx(std::mem::take(&mut b.tx));
        }
        self.release_idle();
        Poll::Ready(Ok(()))
    }

    /// Gives back whichever buffers are empty, and drops them all once every one is.
    fn release_idle(&mut self) {
        let Some(b) = self.bufs.as_mut() else { return };
        if b.rx_used == 0 && !b.rx.is_empty() {
            give_rx(std::mem::take(&mut b.rx));
        }
        if b.plain_pos >= b.plain.len() && b.plain.capacity() != 0 {
            b.plain = Vec::new();
            b.plain_pos = 0;
        }
        if b.tx_pos >= b.tx.len() && b.tx.capacity() != 0 {
            b.tx_pos = 0;
            give_tx(std::mem::take(&mut b.tx));
        }
        if b.is_idle() {
            self.bufs = None;
        }
    }

    /// Copies decrypted bytes to `buf`; true when it copied any.
    fn copy_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some(b) = self.bufs.as_mut() else {
            return false;
        };
        let pending = &b.plain[b.plain_pos..];
        if pending.is_empty() || buf.remaining() == 0 {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        b.plain_pos += n;
        if b.plain_pos >= b.plain.len() {
            self.release_idle();
        }
        true
    }
}

/// A [`TlsStream`] between two runtimes: its socket registered with neither.
pub struct Detached {
    tcp: std::net::TcpStream,
    engine: Engine,
    bufs: Option<Box<Bufs>>,
    read_eof: bool,
    close_sent: bool,
}

impl Detached {
    /// The stream again, its socket registered with the runtime this is called in.
    ///
    /// # Errors
    /// The socket could not be registered (no runtime here, or the reactor refused it).
    pub fn attach(self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            tcp: TcpStream::from_std(self.tcp)?,
            engine: self.engine,
            bufs: self.bufs,
            read_eof: self.read_eof,
            close_sent: self.close_sent,
        })
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.copy_plain(buf) || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.rx_used() > 0 {
                let next = this.process(Out::Nothing)?;
                // Post-handshake messages (tickets, key updates) and alerts leave now; a
                // full socket does not hold up reading.
                if this.tx_pending() > 0 {
                    if let Poll::Ready(Err(e)) = this.poll_flush_tx(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                if this.copy_plain(buf) {
                    this.release_idle();
                    return Poll::Ready(Ok(()));
                }
                if next == Next::Closed {
                    this.read_eof = true;
                }
            }
            if this.read_eof {
                this.release_idle();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.tx_pending() >= TX_HIGH {
            ready!(this.poll_flush_tx(cx))?;
        }
        let take = data.len().min(WRITE_CHUNK);
        this.process(Out::Data(&data[..take]))?;
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_tx(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            // Best effort: a connection already broken still shuts down.
            let _ = this.process(Out::CloseNotify);
            this.close_sent = true;
        }
        ready!(this.poll_flush_tx(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
