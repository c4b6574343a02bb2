//! What a journal record holds: one group commit's requests, with the writer's clock and
//! sequence counter as they were when it applied them, so that applying the record again
//! to the state of the previous checkpoint gives the same state. Only the requests of the
//! hot path are journaled (pushes, acks, delivery and open reports, cancels, gap clears,
//! last-seen updates, sweeps); a batch holding any other request (apps, credentials,
//! devices, console) commits the classic way, durable in redb itself, which is also a
//! checkpoint.
//!
//! The payload is binary ([`super::journal_binary`]): the writer encodes every journaled
//! batch, so its encoding is on the hot path, and reads it back only after a crash. Records
//! that versions before the binary form wrote are JSON (they start with `{`) and still
//! decode, so a journal left by an older version is applied after an upgrade.

use serde::Deserialize;
use tokio::sync::oneshot;

use super::journal_binary::{self, OpOwned, OpRef};
use super::writer::Op;
use super::StoreError;

/// The JSON form of a batch (versions before the binary form).
#[derive(Deserialize)]
struct BatchJson {
    clock: u64,
    next_seq: u64,
    ops: Vec<OpOwned>,
}

/// A batch read back from the journal.
pub(crate) struct Batch {
    pub clock: u64,
    pub next_seq: u64,
    /// The requests, with replies nobody waits for.
    pub ops: Vec<Op>,
}

fn out(op: &Op) -> Option<OpRef<'_>> {
    Some(match op {
        Op::Push(push, _) => OpRef::Push(push),
        Op::Ack {
            app, device, ids, ..
        } => OpRef::Ack { app, device, ids },
        Op::Delivered { app, device, items } => OpRef::Delivered { app, device, items },
        Op::Opened { app, ids } => OpRef::Opened { app, ids },
        Op::Cancel { app, id, .. } => OpRef::Cancel { app, id },
        Op::ClearGap { app, device, told } => OpRef::ClearGap {
            app,
            device,
            told: *told,
        },
        Op::TouchDevice { app, device, at_ms } => OpRef::Touch {
            app,
            device,
            at_ms: *at_ms,
        },
        Op::Sweep { now_ms, .. } => OpRef::Sweep { now_ms: *now_ms },
        _ => return None,
    })
}

/// Encodes a batch into `buf`, or returns false (leaving `buf` empty) if one of its
/// requests is not journaled.
pub(crate) fn encode(clock: u64, next_seq: u64, ops: &[Op], buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let Some(ops) = ops.iter().map(out).collect::<Option<Vec<_>>>() else {
        return false;
    };
    if journal_binary::encode(clock, next_seq, &ops, buf).is_none() {
        // Not reached for the writer's bounded batches; the batch then commits the
        // classic way.
        buf.clear();
        return false;
    }
    true
}

/// Decodes a record's payload.
///
/// # Errors
/// `Corrupt` when the payload is not a batch this version wrote.
pub(crate) fn decode(payload: &[u8]) -> Result<Batch, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table: "journal",
        reason,
    };
    let (clock, next_seq, ops) = if payload.first() == Some(&journal_binary::VERSION) {
        journal_binary::decode(payload).map_err(|e| corrupt(e.to_string()))?
    } else {
        let batch: BatchJson =
            serde_json::from_slice(payload).map_err(|e| corrupt(e.to_string()))?;
        (batch.clock, batch.next_seq, batch.ops)
    };
    fn reply<T>() -> oneshot::Sender<Result<T, StoreError>> {
        oneshot::channel().0
    }
    let ops = ops
        .into_iter()
        .map(|op| match op {
            OpOwned::Push(push) => Op::Push(push, reply()),
            OpOwned::Ack { app, device, ids } => Op::Ack {
                app,
                device,
                ids,
                reply: reply(),
            },
            OpOwned::Delivered { app, device, items } => Op::Delivered { app, device, items },
            OpOwned::Opened { app, ids } => Op::Opened { app, ids },
            OpOwned::Cancel { app, id } => Op::Cancel {
                app,
                id,
                reply: reply(),
            },
            OpOwned::ClearGap { app, device, told } => Op::ClearGap { app, device, told },
            OpOwned::Touch { app, device, at_ms } => Op::TouchDevice { app, device, at_ms },
            OpOwned::Sweep { now_ms } => Op::Sweep {
                now_ms,
                reply: reply(),
            },
        })
        .collect();
    Ok(Batch {
        clock,
        next_seq,
        ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdList;
    use crate::domain::{Priority, Target};
    use crate::store::ops_messages::PushOp;

    fn push(id: &str) -> PushOp {
        let mut data = serde_json::Map::new();
        data.insert("n".into(), serde_json::json!(1.5e300));
        data.insert("s".into(), serde_json::json!("é\"\n"));
        PushOp {
            app: "a".into(),
            id: id.into(),
            target: Target::Devices(vec!["d1".into(), "d2".into()]),
            notification: None,
            data: Some(data),
            priority: Priority::High,
            created_at_ms: 42,
            ttl_secs: 60,
            collapse_key: Some("k".into()),
            send_at_ms: None,
            idempotency: None,
            mailbox_cap: 100,
        }
    }

    #[test]
    fn a_batch_of_hot_requests_round_trips() {
        let ops = vec![
            Op::Push(Box::new(push("m1")), oneshot::channel().0),
            Op::Ack {
                app: "a".into(),
                device: "d1".into(),
                ids: IdList::from(vec!["m1".to_owned(), "m\"2".to_owned()]),
                reply: oneshot::channel().0,
            },
            Op::Delivered {
                app: "a".into(),
                device: "d2".into(),
                items: vec![(7, Some("m1".into())), (8, None)],
            },
            Op::TouchDevice {
                app: "a".into(),
                device: "d2".into(),
                at_ms: 99,
            },
        ];
        let mut buf = Vec::new();
        assert!(encode(1234, 56, &ops, &mut buf));
        let back = decode(&buf).expect("decode");
        assert_eq!((back.clock, back.next_seq, back.ops.len()), (1234, 56, 4));
        let mut again = Vec::new();
        assert!(encode(1234, 56, &back.ops, &mut again));
        assert_eq!(
            buf, again,
            "decoding and encoding again gives the same bytes"
        );
        match &back.ops[0] {
            Op::Push(p, _) => {
                assert_eq!(p.id, "m1");
                assert_eq!(p.data, push("m1").data);
                assert_eq!(p.target, push("m1").target);
            }
            _ => panic!("not a push"),
        }
    }

    fn every_kind() -> Vec<Op> {
        vec![
            Op::Push(Box::new(push("m1")), oneshot::channel().0),
            Op::Ack {
                app: "a".into(),
                device: "d1".into(),
                ids: IdList::from(vec!["m1".to_owned(), "m\"2".to_owned()]),
                reply: oneshot::channel().0,
            },
            Op::Delivered {
                app: "a".into(),
                device: "d2".into(),
                items: vec![(7, Some("m1".into())), (8, None)],
            },
            Op::Opened {
                app: "a".into(),
                ids: IdList::from(vec!["é".to_owned()]),
            },
            Op::Cancel {
                app: "a".into(),
                id: "m1".into(),
                reply: oneshot::channel().0,
            },
            Op::ClearGap {
                app: "a".into(),
                device: "d1".into(),
                told: 3,
            },
            Op::TouchDevice {
                app: "a".into(),
                device: "d2".into(),
                at_ms: 99,
            },
            Op::Sweep {
                now_ms: u64::MAX,
                reply: oneshot::channel().0,
            },
        ]
    }

    #[test]
    fn every_journaled_kind_round_trips_in_the_binary_form() {
        let mut buf = Vec::new();
        assert!(encode(7, 8, &every_kind(), &mut buf));
        assert_eq!(buf[0], journal_binary::VERSION);
        let back = decode(&buf).expect("decode");
        assert_eq!((back.clock, back.next_seq), (7, 8));
        let mut again = Vec::new();
        assert!(encode(7, 8, &back.ops, &mut again));
        assert_eq!(buf, again);
        assert!(matches!(&back.ops[3], Op::Opened { ids, .. } if ids.get(0) == Some("é")));
        assert!(matches!(
            &back.ops[7],
            Op::Sweep {
                now_ms: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn a_record_an_older_version_wrote_as_json_still_decodes() {
        let push = serde_json::to_string(&push("m1")).unwrap();
        let json = format!(
            r#"{{"clock":1234,"next_seq":56,"ops":[{{"Push":{push}}},
            {{"Ack":{{"app":"a","device":"d1","ids":["m1","m\"2"]}}}},
            {{"Delivered":{{"app":"a","device":"d2","items":[[7,"m1"],[8,null]]}}}},
            {{"Opened":{{"app":"a","ids":["é"]}}}},
            {{"Cancel":{{"app":"a","id":"m1"}}}},
            {{"ClearGap":{{"app":"a","device":"d1","told":3}}}},
            {{"Touch":{{"app":"a","device":"d2","at_ms":99}}}},
            {{"Sweep":{{"now_ms":18446744073709551615}}}}]}}"#
        );
        let back = decode(json.as_bytes()).expect("the JSON form");
        assert_eq!((back.clock, back.next_seq), (1234, 56));
        // The same requests as written in the binary form today.
        let (mut from_json, mut from_ops) = (Vec::new(), Vec::new());
        assert!(encode(1, 2, &back.ops, &mut from_json));
        assert!(encode(1, 2, &every_kind(), &mut from_ops));
        assert_eq!(from_json, from_ops);
    }

    #[test]
    fn a_binary_payload_cut_short_or_with_bytes_after_it_is_an_error() {
        let mut buf = Vec::new();
        assert!(encode(7, 8, &every_kind(), &mut buf));
        for cut in 1..buf.len() {
            assert!(
                decode(&buf[..cut]).is_err(),
                "cut at {cut} of {}",
                buf.len()
            );
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // A count far past the bytes left is refused before anything is allocated for it.
        let mut huge = vec![journal_binary::VERSION];
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        // An unknown op tag, and an id that is not UTF-8.
        let mut tag = huge[..17].to_vec();
        tag.extend_from_slice(&1u32.to_le_bytes());
        tag.push(99);
        assert!(decode(&tag).is_err());
        let mut bad = huge[..17].to_vec();
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.push(5); // Cancel
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.push(b'a');
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.push(0xff);
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn a_batch_with_another_request_is_not_journaled() {
        let ops = vec![
            Op::Opened {
                app: "a".into(),
                ids: IdList::default(),
            },
            Op::DeleteDevice {
                app: "a".into(),
                device: "d".into(),
                reply: oneshot::channel().0,
            },
        ];
        let mut buf = vec![1, 2, 3];
        assert!(!encode(1, 1, &ops, &mut buf));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_payload_that_is_not_a_batch_is_an_error() {
        for bad in [
            &b""[..],
            b"{}",
            b"{\"clock\":1,\"next_seq\":1,\"ops\":[{\"Nope\":1}]}",
        ] {
            assert!(matches!(
                decode(bad),
                Err(StoreError::Corrupt {
                    table: "journal",
                    ..
                })
            ));
        }
    }
}
