//! The binary form of a journal record's payload (the form written since the sixteenth
//! session; [`super::journal_ops`] still reads the JSON form older versions wrote).
//!
//! ```text
//! version 0x02 | clock u64 | next_seq u64 | op count u32 | op*
//! op   = tag u8 | fields (by tag, below)
//! str  = length u32 | UTF-8 bytes
//! ids  = count u32 | str*
//! ```
//!
//! Integers are little-endian. Push carries its request as JSON (`str`): a push holds the
//! tenant's free-form `data` object and many optional fields that change between versions,
//! and it is a small part of a batch's work. The requests that a fan-out sends by the
//! thousand (acks, delivery reports) are fixed shapes and go as plain fields: encoding them
//! as JSON (escaping every string, growing the buffer) was about 3 % of the server's CPU in
//! a 1,000-device fan-out. Every length and count is checked against the bytes left, so a
//! payload that is not a batch is an error, never a panic or a large allocation.

use super::ops_messages::PushOp;
use crate::domain::IdList;

/// First byte of a binary payload (a JSON payload starts with `{`).
pub const VERSION: u8 = 2;

const PUSH: u8 = 1;
const ACK: u8 = 2;
const DELIVERED: u8 = 3;
const OPENED: u8 = 4;
const CANCEL: u8 = 5;
const CLEAR_GAP: u8 = 6;
const TOUCH: u8 = 7;
const SWEEP: u8 = 8;

/// A journaled request, borrowed from the writer's batch.
pub enum OpRef<'a> {
    Push(&'a PushOp),
    Ack {
        app: &'a str,
        device: &'a str,
        ids: &'a IdList,
    },
    Delivered {
        app: &'a str,
        device: &'a str,
        items: &'a [(u64, Option<String>)],
    },
    Opened {
        app: &'a str,
        ids: &'a IdList,
    },
    Cancel {
        app: &'a str,
        id: &'a str,
    },
    ClearGap {
        app: &'a str,
        device: &'a str,
        told: u64,
    },
    Touch {
        app: &'a str,
        device: &'a str,
        at_ms: u64,
    },
    Sweep {
        now_ms: u64,
    },
}

/// A journaled request read back. Also the JSON form's shape (serde's externally tagged
/// enum), so both forms decode to it.
#[derive(Debug, serde::Deserialize)]
pub enum OpOwned {
    Push(Box<PushOp>),
    Ack {
        app: String,
        device: String,
        ids: IdList,
    },
    Delivered {
        app: String,
        device: String,
        items: Vec<(u64, Option<String>)>,
    },
    Opened {
        app: String,
        ids: IdList,
    },
    Cancel {
        app: String,
        id: String,
    },
    ClearGap {
        app: String,
        device: String,
        told: u64,
    },
    Touch {
        app: String,
        device: String,
        at_ms: u64,
    },
    Sweep {
        now_ms: u64,
    },
}

/// Why a payload is not a binary batch.
#[derive(Debug, thiserror::Error)]
#[error("binary journal batch: {0}")]
pub struct DecodeError(String);

fn put_u32(buf: &mut Vec<u8>, n: usize) -> Option<()> {
    buf.extend_from_slice(&u32::try_from(n).ok()?.to_le_bytes());
    Some(())
}

fn put_str(buf: &mut Vec<u8>, s: &str) -> Option<()> {
    put_u32(buf, s.len())?;
    buf.extend_from_slice(s.as_bytes());
    Some(())
}

fn put_ids(buf: &mut Vec<u8>, ids: &IdList) -> Option<()> {
    put_u32(buf, ids.len())?;
    for id in ids.iter() {
        put_str(buf, id)?;
    }
    Some(())
}

/// Appends the batch to `buf`; `None` (with `buf` partly written) if a length passes
/// `u32` or a push does not serialise, neither of which the writer's bounded batches reach.
pub fn encode(clock: u64, next_seq: u64, ops: &[OpRef<'_>], buf: &mut Vec<u8>) -> Option<()> {
    buf.push(VERSION);
    buf.extend_from_slice(&clock.to_le_bytes());
    buf.extend_from_slice(&next_seq.to_le_bytes());
    put_u32(buf, ops.len())?;
    for op in ops {
        match op {
            OpRef::Push(push) => {
                buf.push(PUSH);
                // The length goes in front once the JSON is written.
                let at = buf.len();
                buf.extend_from_slice(&[0; 4]);
                serde_json::to_writer(&mut *buf, push).ok()?;
                let len = u32::try_from(buf.len() - at - 4).ok()?;
                buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            OpRef::Ack { app, device, ids } => {
                buf.push(ACK);
                put_str(buf, app)?;
                put_str(buf, device)?;
                put_ids(buf, ids)?;
            }
            OpRef::Delivered { app, device, items } => {
                buf.push(DELIVERED);
                put_str(buf, app)?;
                put_str(buf, device)?;
                put_u32(buf, items.len())?;
                for (seq, id) in *items {
                    buf.extend_from_slice(&seq.to_le_bytes());
                    match id {
                        Some(id) => {
                            buf.push(1);
                            put_str(buf, id)?;
                        }
                        None => buf.push(0),
                    }
                }
            }
            OpRef::Opened { app, ids } => {
                buf.push(OPENED);
                put_str(buf, app)?;
                put_ids(buf, ids)?;
            }
            OpRef::Cancel { app, id } => {
                buf.push(CANCEL);
                put_str(buf, app)?;
                put_str(buf, id)?;
            }
            OpRef::ClearGap { app, device, told } => {
                buf.push(CLEAR_GAP);
                put_str(buf, app)?;
                put_str(buf, device)?;
                buf.extend_from_slice(&told.to_le_bytes());
            }
            OpRef::Touch { app, device, at_ms } => {
                buf.push(TOUCH);
                put_str(buf, app)?;
                put_str(buf, device)?;
                buf.extend_from_slice(&at_ms.to_le_bytes());
            }
            OpRef::Sweep { now_ms } => {
                buf.push(SWEEP);
                buf.extend_from_slice(&now_ms.to_le_bytes());
            }
        }
    }
    Some(())
}

/// Reads fields off the front of a payload.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!("cut short in {what}")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn u32(&mut self, what: &str) -> Result<usize, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
    }

    /// A count of items of at least `min_item` bytes each: larger than the bytes left can
    /// hold is an error (so a damaged count cannot make a large allocation).
    fn count(&mut self, min_item: usize, what: &str) -> Result<usize, DecodeError> {
        let n = self.u32(what)?;
        if n.saturating_mul(min_item) > self.0.len() {
            return Err(DecodeError(format!(
                "{what}: {n} items in {} bytes",
                self.0.len()
            )));
        }
        Ok(n)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)?;
        self.take(n, what)
    }

    fn str(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(what)?)
            .map_err(|_| DecodeError(format!("{what} is not UTF-8")))
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        self.str(what).map(str::to_owned)
    }

    fn ids(&mut self, what: &str) -> Result<IdList, DecodeError> {
        let n = self.count(4, what)?;
        let mut ids = IdList::default();
        for _ in 0..n {
            ids.push(self.str(what)?);
        }
        Ok(ids)
    }
}

/// A decoded batch: (clock, next_seq, requests).
pub type Decoded = (u64, u64, Vec<OpOwned>);

/// Decodes a payload that starts with [`VERSION`].
///
/// # Errors
/// When the payload is not a whole binary batch, or has bytes after one.
pub fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let mut input = Input(payload);
    if input.u8("version")? != VERSION {
        return Err(DecodeError("not version 2".into()));
    }
    let clock = input.u64("clock")?;
    let next_seq = input.u64("next_seq")?;
    let n = input.count(1, "ops")?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let op = match input.u8("op tag")? {
            PUSH => {
                let json = input.bytes("push")?;
                let push =
                    serde_json::from_slice(json).map_err(|e| DecodeError(format!("push: {e}")))?;
                OpOwned::Push(Box::new(push))
            }
            ACK => OpOwned::Ack {
                app: input.string("app")?,
                device: input.string("device")?,
                ids: input.ids("ack ids")?,
            },
            DELIVERED => {
                let app = input.string("app")?;
                let device = input.string("device")?;
                let n = input.count(9, "delivered items")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let seq = input.u64("delivered seq")?;
                    let id = match input.u8("delivered id flag")? {
                        0 => None,
                        1 => Some(input.string("delivered id")?),
                        other => return Err(DecodeError(format!("id flag {other}"))),
                    };
                    items.push((seq, id));
                }
                OpOwned::Delivered { app, device, items }
            }
            OPENED => OpOwned::Opened {
                app: input.string("app")?,
                ids: input.ids("opened ids")?,
            },
            CANCEL => OpOwned::Cancel {
                app: input.string("app")?,
                id: input.string("id")?,
            },
            CLEAR_GAP => OpOwned::ClearGap {
                app: input.string("app")?,
                device: input.string("device")?,
                told: input.u64("told")?,
            },
            TOUCH => OpOwned::Touch {
                app: input.string("app")?,
                device: input.string("device")?,
                at_ms: input.u64("at_ms")?,
            },
            SWEEP => OpOwned::Sweep {
                now_ms: input.u64("now_ms")?,
            },
            other => return Err(DecodeError(format!("unknown op tag {other}"))),
        };
        ops.push(op);
    }
    if !input.0.is_empty() {
        return Err(DecodeError(format!(
            "{} bytes after the batch",
            input.0.len()
        )));
    }
    Ok((clock, next_seq, ops))
}
