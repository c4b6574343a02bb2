//! What a journal record holds: one group commit's requests, with the writer's clock and
//! sequence counter as they were when it applied them, so that applying the record again
//! to the state of the previous checkpoint gives the same state. Only the requests of the
//! hot path are journaled (pushes, acks, delivery and open reports, cancels, gap clears,
//! last-seen updates, sweeps); a batch holding any other request (apps, credentials,
//! devices, console) commits the classic way, durable in redb itself, which is also a
//! checkpoint.
//!
//! The payload is JSON: the writer encodes each journaled batch once and reads it back only
//! after a crash, and JSON keeps the record readable across versions of the request types.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::ops_messages::PushOp;
use super::writer::Op;
use super::StoreError;
use crate::domain::IdList;

#[derive(Serialize)]
struct BatchOut<'a> {
    /// The writer's clock while it applied the batch (ms).
    clock: u64,
    /// The next message sequence number before the batch.
    next_seq: u64,
    ops: Vec<OpOut<'a>>,
}

#[derive(Serialize)]
enum OpOut<'a> {
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

#[derive(Deserialize)]
struct BatchIn {
    clock: u64,
    next_seq: u64,
    ops: Vec<OpIn>,
}

#[derive(Deserialize)]
enum OpIn {
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

/// A batch read back from the journal.
pub(crate) struct Batch {
    pub clock: u64,
    pub next_seq: u64,
    /// The requests, with replies nobody waits for.
    pub ops: Vec<Op>,
}

fn out(op: &Op) -> Option<OpOut<'_>> {
    Some(match op {
        Op::Push(push, _) => OpOut::Push(push),
        Op::Ack {
            app, device, ids, ..
        } => OpOut::Ack { app, device, ids },
        Op::Delivered { app, device, items } => OpOut::Delivered { app, device, items },
        Op::Opened { app, ids } => OpOut::Opened { app, ids },
        Op::Cancel { app, id, .. } => OpOut::Cancel { app, id },
        Op::ClearGap { app, device, told } => OpOut::ClearGap {
            app,
            device,
            told: *told,
        },
        Op::TouchDevice { app, device, at_ms } => OpOut::Touch {
            app,
            device,
            at_ms: *at_ms,
        },
        Op::Sweep { now_ms, .. } => OpOut::Sweep { now_ms: *now_ms },
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
    let batch = BatchOut {
        clock,
        next_seq,
        ops,
    };
    if serde_json::to_writer(&mut *buf, &batch).is_err() {
        // Not reached for these types; the batch then commits the classic way.
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
    let batch: BatchIn = serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
        table: "journal",
        reason: e.to_string(),
    })?;
    fn reply<T>() -> oneshot::Sender<Result<T, StoreError>> {
        oneshot::channel().0
    }
    let ops = batch
        .ops
        .into_iter()
        .map(|op| match op {
            OpIn::Push(push) => Op::Push(push, reply()),
            OpIn::Ack { app, device, ids } => Op::Ack {
                app,
                device,
                ids,
                reply: reply(),
            },
            OpIn::Delivered { app, device, items } => Op::Delivered { app, device, items },
            OpIn::Opened { app, ids } => Op::Opened { app, ids },
            OpIn::Cancel { app, id } => Op::Cancel {
                app,
                id,
                reply: reply(),
            },
            OpIn::ClearGap { app, device, told } => Op::ClearGap { app, device, told },
            OpIn::Touch { app, device, at_ms } => Op::TouchDevice { app, device, at_ms },
            OpIn::Sweep { now_ms } => Op::Sweep {
                now_ms,
                reply: reply(),
            },
        })
        .collect();
    Ok(Batch {
        clock: batch.clock,
        next_seq: batch.next_seq,
        ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Priority, Target};

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
