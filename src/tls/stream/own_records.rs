//! The TLS 1.3 half of [`TlsStream`] after its handshake: ciphertext in the stream's buffers
//! goes through [`Records`](crate::tls::records::Records) instead of rustls's connection.

use std::io;

use super::{record_error, take_tx, Engine, Next, Out, TlsStream};
use crate::tls::records::RecordError;

impl TlsStream {
    /// [`Self::process_inner`] for a connection on `Records`: decrypts the complete records
    /// received, then encrypts `out`. A fatal error sends its alert if the socket takes it.
    pub(super) fn process_records(&mut self, out: &mut Out<'_>) -> io::Result<Next> {
        let Self {
            engine: Engine::Records(records),
            bufs,
            read_eof,
            close_sent,
            tcp,
        } = self
        else {
            return Err(io::Error::other("TLS record layer missing"));
        };
        let b = &mut **bufs.get_or_insert_with(Box::default);
        let result = (|| -> Result<(), RecordError> {
            if b.rx_used > 0 {
                if *read_eof {
                    // Nothing after the peer's close_notify is read.
                    b.rx_used = 0;
                } else {
                    // `tx` is written only to answer a KeyUpdate: no pooled buffer for that.
                    let opened = records.open(&mut b.rx[..b.rx_used], &mut b.plain, &mut b.tx)?;
                    b.rx.copy_within(opened.consumed..b.rx_used, 0);
                    b.rx_used -= opened.consumed;
                    if opened.peer_closed {
                        *read_eof = true;
                        b.rx_used = 0;
                    }
                }
            }
            match std::mem::replace(out, Out::Nothing) {
                Out::Nothing => {}
                Out::Data(data) => {
                    if b.tx.capacity() == 0 {
                        b.tx = take_tx();
                    }
                    records.seal(data, &mut b.tx)?;
                }
                Out::CloseNotify => {
                    if b.tx.capacity() == 0 {
                        b.tx = take_tx();
                    }
                    records.close_notify(&mut b.tx)?;
                    *close_sent = true;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(Next::Read),
            Err(e) => {
                if let Some(alert) = e.alert {
                    let mut buf = Vec::new();
                    if records.alert(alert, &mut buf).is_ok() {
                        let _ = tcp.try_write(&buf);
                    }
                }
                *close_sent = true;
                Err(record_error(e))
            }
        }
    }
}
