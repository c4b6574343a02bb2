//! TLS 1.3 application traffic once the handshake is over, without rustls's connection state.
//!
//! After a TLS 1.3 handshake, rustls's connection object keeps its handshake deframer, state
//! machine and queues for the connection's whole life: about 2 KiB of an idle connection's
//! 5 (docs/benchmarks.md, "Twenty-first session"). rustls offers the way out that kernel TLS
//! uses: [`UnbufferedServerConnection::dangerous_into_kernel_connection`] hands over the
//! traffic keys and a small [`KernelConnection`] that derives the next keys on a key update.
//! Records are then sealed and opened here with rustls's own cipher objects (the
//! `MessageEncrypter`/`MessageDecrypter` of the negotiated suite, which its record layer
//! uses too), so no cryptography is written here: only the record framing of RFC 8446 §5,
//! the alert and KeyUpdate messages (§6, §4.6.3), and the sequence numbers.
//!
//! TLS 1.2 connections stay with rustls for their whole life.

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage, Tls13AeadAlgorithm,
};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, HandshakeType, ProtocolVersion,
    SupportedCipherSuite,
};

use super::{ALPN_H2, ALPN_HTTP11};

/// Largest plaintext in one record (RFC 8446 §5.1).
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// Largest ciphertext a peer may send in one record (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
const HEADER: usize = 5;
/// `KeyUpdate` bodies (RFC 8446 §4.6.3).
const UPDATE_NOT_REQUESTED: u8 = 0;
const UPDATE_REQUESTED: u8 = 1;
/// Records sent under one key are kept this far below the suite's confidentiality limit
/// before the key is replaced.
const LIMIT_MARGIN: u64 = 1024;

/// Why the traffic cannot go on, with the alert the peer is sent (none when the peer's own
/// alert ended it).
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct RecordError {
    pub alert: Option<AlertDescription>,
    pub reason: String,
}

fn fail(alert: AlertDescription, reason: impl Into<String>) -> RecordError {
    RecordError {
        alert: Some(alert),
        reason: reason.into(),
    }
}

/// What [`Records::open`] did with the ciphertext it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of complete records consumed from the front of the input.
    pub consumed: usize,
    /// The peer sent close_notify: nothing after it is read.
    pub peer_closed: bool,
}

/// The keys and sequence numbers of one TLS 1.3 connection after its handshake.
pub struct Records {
    kernel: KernelConnection<ServerConnectionData>,
    aead: &'static dyn Tls13AeadAlgorithm,
    encrypter: Box<dyn MessageEncrypter>,
    decrypter: Box<dyn MessageDecrypter>,
    tx_seq: u64,
    rx_seq: u64,
    /// Records one sending key may seal: the suite's confidentiality limit, with a margin.
    tx_budget: u64,
    /// The sending key is replaced when `tx_seq` reaches this.
    tx_limit: u64,
    alpn: Option<&'static [u8]>,
}

fn key_and_iv(secrets: ConnectionTrafficSecrets) -> Result<(AeadKey, Iv), RecordError> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(fail(
            AlertDescription::InternalError,
            "unsupported TLS 1.3 cipher suite",
        )),
    }
}

fn internal(e: &rustls::Error) -> RecordError {
    fail(AlertDescription::InternalError, e.to_string())
}

impl Records {
    /// Takes over a TLS 1.3 connection whose handshake is complete and whose handshake
    /// bytes were all sent. The configuration must have `enable_secret_extraction` set.
    ///
    /// # Errors
    /// When rustls refuses the conversion (the connection is then gone).
    pub fn from_handshake(conn: UnbufferedServerConnection) -> Result<Self, RecordError> {
        // The server offers only these two, so the agreed protocol is one of them.
        let alpn = match conn.alpn_protocol() {
            Some(p) if p == ALPN_H2 => Some(ALPN_H2),
            Some(p) if p == ALPN_HTTP11 => Some(ALPN_HTTP11),
            _ => None,
        };
        let (secrets, kernel) = conn
            .dangerous_into_kernel_connection()
            .map_err(|e| internal(&e))?;
        let SupportedCipherSuite::Tls13(suite) = kernel.negotiated_cipher_suite() else {
            return Err(fail(AlertDescription::InternalError, "not a TLS 1.3 suite"));
        };
        let aead = suite.aead_alg;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let (tx_key, tx_iv) = key_and_iv(tx)?;
        let (rx_key, rx_iv) = key_and_iv(rx)?;
        let tx_budget = suite
            .common
            .confidentiality_limit
            .saturating_sub(LIMIT_MARGIN)
            .max(1);
        Ok(Self {
            kernel,
            aead,
            encrypter: aead.encrypter(tx_key, tx_iv),
            decrypter: aead.decrypter(rx_key, rx_iv),
            tx_seq,
            rx_seq,
            tx_budget,
            tx_limit: tx_seq.saturating_add(tx_budget),
            alpn,
        })
    }

    /// The protocol agreed by ALPN, if any.
    #[must_use]
    pub fn alpn_protocol(&self) -> Option<&'static [u8]> {
        self.alpn
    }

    /// Lets one sending key seal only this many records (tests reach the limit).
    #[cfg(test)]
    pub fn set_tx_budget(&mut self, records: u64) {
        self.tx_budget = records.max(1);
        self.tx_limit = self.tx_seq.saturating_add(self.tx_budget);
    }

    /// Decrypts the complete records at the front of `rx`: application data is appended to
    /// `plain`; a KeyUpdate asking for ours queues it in `tx`. Stops after close_notify.
    ///
    /// # Errors
    /// A record that is malformed, too large, fails authentication or carries a message not
    /// allowed after the handshake: the connection cannot go on.
    pub fn open(
        &mut self,
        rx: &mut [u8],
        plain: &mut Vec<u8>,
        tx: &mut Vec<u8>,
    ) -> Result<Opened, RecordError> {
        let mut opened = Opened::default();
        while let Some(header) = rx.get(opened.consumed..opened.consumed + HEADER) {
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[0] != u8::from(ContentType::ApplicationData) {
                return Err(fail(
                    AlertDescription::UnexpectedMessage,
                    "unprotected TLS record after the handshake",
                ));
            }
            if len > MAX_CIPHERTEXT {
                return Err(fail(
                    AlertDescription::RecordOverflow,
                    "TLS record larger than the protocol allows",
                ));
            }
            let start = opened.consumed + HEADER;
            let Some(body) = rx.get_mut(start..start + len) else {
                break; // the rest of this record has not arrived yet
            };
            opened.consumed = start + len;
            let message = InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                body,
            );
            let seq = self.rx_seq;
            self.rx_seq = seq.checked_add(1).ok_or_else(|| {
                fail(AlertDescription::InternalError, "TLS sequence number spent")
            })?;
            let record = self.decrypter.decrypt(message, seq).map_err(|_| {
                fail(
                    AlertDescription::BadRecordMac,
                    "TLS record failed authentication",
                )
            })?;
            if record.payload.len() > MAX_FRAGMENT {
                return Err(fail(
                    AlertDescription::RecordOverflow,
                    "TLS record plaintext larger than the protocol allows",
                ));
            }
            match record.typ {
                ContentType::ApplicationData => plain.extend_from_slice(record.payload),
                ContentType::Alert => {
                    if peer_alert(record.payload)? {
                        opened.peer_closed = true;
                        opened.consumed = rx.len();
                        return Ok(opened);
                    }
                }
                ContentType::Handshake => {
                    let update_requested = key_update(record.payload)?;
                    let (seq, secrets) =
                        self.kernel.update_rx_secret().map_err(|e| internal(&e))?;
                    let (key, iv) = key_and_iv(secrets)?;
                    self.decrypter = self.aead.decrypter(key, iv);
                    self.rx_seq = seq;
                    if update_requested {
                        self.update_tx(tx)?;
                    }
                }
                _ => {
                    return Err(fail(
                        AlertDescription::UnexpectedMessage,
                        "unexpected TLS content type after the handshake",
                    ))
                }
            }
        }
        Ok(opened)
    }

    /// Encrypts application data into `tx`, one record per [`MAX_FRAGMENT`] bytes.
    ///
    /// # Errors
    /// The cipher failed (the connection cannot go on).
    pub fn seal(&mut self, data: &[u8], tx: &mut Vec<u8>) -> Result<(), RecordError> {
        for chunk in data.chunks(MAX_FRAGMENT) {
            self.seal_record(ContentType::ApplicationData, chunk, tx)?;
        }
        Ok(())
    }

    /// Queues close_notify in `tx`.
    ///
    /// # Errors
    /// As [`Self::seal`].
    pub fn close_notify(&mut self, tx: &mut Vec<u8>) -> Result<(), RecordError> {
        self.alert(AlertDescription::CloseNotify, tx)
    }

    /// Queues an alert in `tx` (warning level for close_notify, fatal for the rest).
    ///
    /// # Errors
    /// As [`Self::seal`].
    pub fn alert(&mut self, alert: AlertDescription, tx: &mut Vec<u8>) -> Result<(), RecordError> {
        let level = if alert == AlertDescription::CloseNotify {
            1
        } else {
            2
        };
        self.seal_record(ContentType::Alert, &[level, u8::from(alert)], tx)
    }

    fn seal_record(
        &mut self,
        typ: ContentType,
        payload: &[u8],
        tx: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        if self.tx_seq >= self.tx_limit {
            self.update_tx(tx)?;
        }
        let message = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        let seq = self.tx_seq;
        self.tx_seq += 1;
        let sealed = self
            .encrypter
            .encrypt(message, seq)
            .map_err(|e| internal(&e))?;
        tx.extend_from_slice(&sealed.encode());
        Ok(())
    }

    /// Sends KeyUpdate under the current key, then switches to the next one.
    fn update_tx(&mut self, tx: &mut Vec<u8>) -> Result<(), RecordError> {
        let body = [
            u8::from(HandshakeType::KeyUpdate),
            0,
            0,
            1,
            UPDATE_NOT_REQUESTED,
        ];
        let message = OutboundPlainMessage {
            typ: ContentType::Handshake,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(&body),
        };
        let sealed = self
            .encrypter
            .encrypt(message, self.tx_seq)
            .map_err(|e| internal(&e))?;
        tx.extend_from_slice(&sealed.encode());
        let (seq, secrets) = self.kernel.update_tx_secret().map_err(|e| internal(&e))?;
        let (key, iv) = key_and_iv(secrets)?;
        self.encrypter = self.aead.encrypter(key, iv);
        self.tx_seq = seq;
        self.tx_limit = seq.saturating_add(self.tx_budget);
        Ok(())
    }
}

/// True for close_notify; ignores user_canceled; any other alert ends the connection.
fn peer_alert(payload: &[u8]) -> Result<bool, RecordError> {
    let &[_level, description] = payload else {
        return Err(fail(AlertDescription::DecodeError, "malformed TLS alert"));
    };
    match AlertDescription::from(description) {
        AlertDescription::CloseNotify => Ok(true),
        AlertDescription::UserCanceled => Ok(false),
        other => Err(RecordError {
            alert: None,
            reason: format!("the peer sent TLS alert {other:?}"),
        }),
    }
}

/// The one handshake message a client may send after the handshake here: a KeyUpdate,
/// whole and alone in its record (it changes the key, so the record must end with it).
/// Returns whether it asks for ours.
fn key_update(payload: &[u8]) -> Result<bool, RecordError> {
    match *payload {
        [typ, 0, 0, 1, body] if typ == u8::from(HandshakeType::KeyUpdate) => match body {
            UPDATE_NOT_REQUESTED => Ok(false),
            UPDATE_REQUESTED => Ok(true),
            _ => Err(fail(
                AlertDescription::IllegalParameter,
                "malformed KeyUpdate",
            )),
        },
        [typ, ..] if typ == u8::from(HandshakeType::KeyUpdate) => Err(fail(
            AlertDescription::UnexpectedMessage,
            "KeyUpdate not alone in its record",
        )),
        _ => Err(fail(
            AlertDescription::UnexpectedMessage,
            "unexpected TLS handshake message after the handshake",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_update_bodies() {
        let ku = u8::from(HandshakeType::KeyUpdate);
        assert!(!key_update(&[ku, 0, 0, 1, 0]).expect("not requested"));
        assert!(key_update(&[ku, 0, 0, 1, 1]).expect("requested"));
        assert_eq!(
            key_update(&[ku, 0, 0, 1, 2])
                .map_err(|e| e.alert.unwrap_or(AlertDescription::CloseNotify)),
            Err(AlertDescription::IllegalParameter)
        );
        // Followed by more bytes: the record does not end with the key change.
        assert_eq!(
            key_update(&[ku, 0, 0, 1, 0, ku, 0, 0, 1, 0])
                .map_err(|e| e.alert.unwrap_or(AlertDescription::CloseNotify)),
            Err(AlertDescription::UnexpectedMessage)
        );
        let ticket = u8::from(HandshakeType::NewSessionTicket);
        assert_eq!(
            key_update(&[ticket, 0, 0, 1, 0])
                .map_err(|e| e.alert.unwrap_or(AlertDescription::CloseNotify)),
            Err(AlertDescription::UnexpectedMessage)
        );
        assert_eq!(
            key_update(&[]).map_err(|e| e.alert.unwrap_or(AlertDescription::CloseNotify)),
            Err(AlertDescription::UnexpectedMessage)
        );
    }
}
