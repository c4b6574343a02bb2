//! The on-disk form of a [`MessageRecord`]: a compact binary encoding, read back together
//! with the JSON form that earlier versions wrote.
//!
//! Every push writes its record and every ack rewrites it, so its size and its encoding
//! cost are paid twice per push by the single writer, and its bytes are what the commit's
//! `fdatasync` waits for. The JSON form was ~350 bytes; this one is ~60–90.
//!
//! Layout (version 1): `0xB1 | flags: u8 | lifecycle: u8 | 12 × u64 | id | target
//! [| topic] [| collapse_key] [| title] [| send_at_ms]`, where a `u64` is an unsigned LEB128
//! varint and a string is a varint byte length then UTF-8. The flags say which optional
//! parts follow and hold `live_only`. A record that starts with `{` is the JSON form.

use super::records::{Lifecycle, MessageRecord};
use super::StoreError;

/// First byte of a version-1 binary record (never `{`, which starts the JSON form).
const V1: u8 = 0xB1;

const HAS_TOPIC: u8 = 1;
const HAS_COLLAPSE_KEY: u8 = 1 << 1;
const HAS_TITLE: u8 = 1 << 2;
const HAS_SEND_AT: u8 = 1 << 3;
const LIVE_ONLY: u8 = 1 << 4;
const KNOWN_FLAGS: u8 = HAS_TOPIC | HAS_COLLAPSE_KEY | HAS_TITLE | HAS_SEND_AT | LIVE_ONLY;

/// Encodes a record in the current binary form.
#[must_use]
pub fn encode(m: &MessageRecord) -> Vec<u8> {
    let strings = m.id.len()
        + m.target.len()
        + m.topic.as_ref().map_or(0, String::len)
        + m.collapse_key.as_ref().map_or(0, String::len)
        + m.title.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(3 + 13 * 10 + 5 * 2 + strings);
    let mut flags = 0;
    for (present, bit) in [
        (m.topic.is_some(), HAS_TOPIC),
        (m.collapse_key.is_some(), HAS_COLLAPSE_KEY),
        (m.title.is_some(), HAS_TITLE),
        (m.send_at_ms.is_some(), HAS_SEND_AT),
        (m.live_only, LIVE_ONLY),
    ] {
        if present {
            flags |= bit;
        }
    }
    out.push(V1);
    out.push(flags);
    out.push(match m.lifecycle {
        Lifecycle::Accepted => 0,
        Lifecycle::Scheduled => 1,
        Lifecycle::Cancelled => 2,
    });
    for v in counts(m) {
        put_u64(&mut out, v);
    }
    put_str(&mut out, &m.id);
    put_str(&mut out, &m.target);
    for s in [&m.topic, &m.collapse_key, &m.title].into_iter().flatten() {
        put_str(&mut out, s);
    }
    if let Some(at) = m.send_at_ms {
        put_u64(&mut out, at);
    }
    out
}

/// Decodes a record in the binary form or in the JSON form of earlier versions.
///
/// # Errors
/// `Corrupt` when the bytes are neither.
pub fn decode(bytes: &[u8]) -> Result<MessageRecord, StoreError> {
    match bytes.first() {
        Some(&V1) => Reader { bytes, at: 1 }.record(),
        Some(b'{') => super::tables::from_json("messages", bytes),
        _ => Err(corrupt("not a message record")),
    }
}

fn counts(m: &MessageRecord) -> [u64; 12] {
    [
        m.seq,
        m.created_at_ms,
        m.expires_at_ms,
        m.targeted,
        m.delivered,
        m.acked,
        m.opened,
        m.expired,
        m.pending,
        m.replaced,
        m.dropped,
        m.cancelled,
    ]
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit set.
        #[allow(clippy::cast_possible_truncation)]
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt {
        table: "messages",
        reason: reason.to_owned(),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn record(mut self) -> Result<MessageRecord, StoreError> {
        let flags = self.byte()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(corrupt("unknown record flags"));
        }
        let lifecycle = match self.byte()? {
            0 => Lifecycle::Accepted,
            1 => Lifecycle::Scheduled,
            2 => Lifecycle::Cancelled,
            _ => return Err(corrupt("unknown lifecycle")),
        };
        let mut c = [0u64; 12];
        for v in &mut c {
            *v = self.u64()?;
        }
        let [seq, created_at_ms, expires_at_ms, targeted, delivered, acked, opened, expired, pending, replaced, dropped, cancelled] =
            c;
        let id = self.string()?;
        let target = self.string()?;
        let topic = self.optional(flags, HAS_TOPIC)?;
        let collapse_key = self.optional(flags, HAS_COLLAPSE_KEY)?;
        let title = self.optional(flags, HAS_TITLE)?;
        let send_at_ms = if flags & HAS_SEND_AT != 0 {
            Some(self.u64()?)
        } else {
            None
        };
        if self.at != self.bytes.len() {
            return Err(corrupt("trailing bytes after the record"));
        }
        Ok(MessageRecord {
            id,
            seq,
            created_at_ms,
            expires_at_ms,
            target,
            targeted,
            delivered,
            acked,
            opened,
            expired,
            pending,
            topic,
            lifecycle,
            send_at_ms,
            collapse_key,
            replaced,
            dropped,
            cancelled,
            live_only: flags & LIVE_ONLY != 0,
            title,
        })
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| corrupt("record ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(corrupt("number too large"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("number too long"))
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let len = usize::try_from(self.u64()?).map_err(|_| corrupt("string too long"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| corrupt("record ends early"))?;
        let s = std::str::from_utf8(&self.bytes[self.at..end])
            .map_err(|_| corrupt("string is not UTF-8"))?;
        self.at = end;
        Ok(s.to_owned())
    }

    fn optional(&mut self, flags: u8, bit: u8) -> Result<Option<String>, StoreError> {
        if flags & bit == 0 {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MessageRecord {
        MessageRecord {
            id: "msg_01JABCDEFGHJKMNPQRSTVWXYZ0".into(),
            seq: 1_234_567,
            created_at_ms: 1_764_633_600_123,
            expires_at_ms: 1_764_720_000_123,
            target: "device:dev_42".into(),
            targeted: 1,
            delivered: 1,
            acked: 0,
            opened: 0,
            expired: 0,
            pending: 1,
            topic: None,
            lifecycle: Lifecycle::Accepted,
            send_at_ms: None,
            collapse_key: None,
            replaced: 0,
            dropped: 0,
            cancelled: 0,
            live_only: false,
            title: Some("Hello".into()),
        }
    }

    fn every_variant() -> Vec<MessageRecord> {
        let mut full = record();
        full.topic = Some("news/é".into());
        full.collapse_key = Some("score".into());
        full.send_at_ms = Some(u64::MAX);
        full.live_only = true;
        full.lifecycle = Lifecycle::Cancelled;
        full.seq = u64::MAX;
        full.cancelled = 1 << 63;
        let mut bare = record();
        bare.title = None;
        bare.lifecycle = Lifecycle::Scheduled;
        bare.seq = 0;
        bare.id = String::new();
        vec![record(), full, bare]
    }

    #[test]
    fn round_trips_every_variant() {
        for m in every_variant() {
            let bytes = encode(&m);
            assert_eq!(bytes[0], V1);
            assert_eq!(decode(&bytes).expect("decodes"), m);
        }
    }

    #[test]
    fn is_much_smaller_than_json() {
        let m = record();
        let json = serde_json::to_vec(&m).expect("json");
        let bin = encode(&m);
        assert!(
            bin.len() * 3 < json.len(),
            "{} vs {}",
            bin.len(),
            json.len()
        );
    }

    #[test]
    fn reads_the_json_form_of_earlier_versions() {
        for m in every_variant() {
            let json = serde_json::to_vec(&m).expect("json");
            assert_eq!(decode(&json).expect("decodes"), m);
        }
        // A record written before `title` and the other defaulted fields existed.
        let old = br#"{"id":"m1","seq":3,"created_at_ms":1,"expires_at_ms":2,"target":"all",
            "targeted":5,"delivered":4,"acked":3,"opened":2,"expired":1,"pending":0}"#;
        let m = decode(old).expect("old json");
        assert_eq!((m.id.as_str(), m.seq, m.acked), ("m1", 3, 3));
        assert_eq!(m.lifecycle, Lifecycle::Accepted);
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error_not_a_panic() {
        for m in every_variant() {
            let bytes = encode(&m);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode(&longer).is_err(), "trailing byte");
            // Flipping any byte never panics (it may still decode to another record).
            for i in 0..bytes.len() {
                for b in [0x00, 0x7f, 0x80, 0xff] {
                    let mut bad = bytes.clone();
                    bad[i] = b;
                    let _ = decode(&bad);
                }
            }
        }
        assert!(decode(&[V1, 0x80, 0]).is_err(), "unknown flag");
        assert!(decode(&[V1, 0, 9]).is_err(), "unknown lifecycle");
        let mut huge = vec![V1, 0, 0];
        huge.extend_from_slice(&[0xff; 10]);
        assert!(decode(&huge).is_err(), "varint past 64 bits");
        assert!(decode(b"").is_err() && decode(b"x").is_err());
    }
}
