//! Writes that accept a push: idempotency, scheduling, and storing it for its recipients —
//! one mailbox entry per device for direct targets, one topic-log entry for topic and `all`
//! targets (O(1) in the audience) — with collapse keys and the per-device mailbox cap.

use bytes::Bytes;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::domain::{encode_message_frame, FrameParts, Notification, Priority, Target};

use super::open_tables::Tables;
use super::ops_delivery::{load_message, release_entry, save_message, Outcome};
use super::ops_sweep::RECORD_RETENTION_MS;
use super::records::{kept_title, IdempotencyRecord, Lifecycle, MessageRecord};
use super::tables::{
    from_json, to_json, MailboxEntry, ALL_TOPIC, COLLAPSE_DEVICE, COLLAPSE_TOPIC, EXPIRE_CONTENT,
    FORGET_RECORD, GAPS, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, SCHEDULE, TOPIC_COUNTS, TOPIC_LOG,
    USER_DEVICES,
};
use super::writer::WriterState;
use super::{Committed, StoreError};

/// How long a `ttl: 0` message may wait in a connected session's outbox before it is
/// written. Its TTL ends when it is sent; without this window a live session would
/// consider it expired on arrival and never write it.
pub const LIVE_ONLY_WINDOW_MS: u64 = 10_000;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// An idempotency key with the hash of the request it was first used with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_sha256: String,
}

/// A validated push, ready to store (and, when scheduled, stored as it is until due).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushOp {
    pub app: String,
    pub id: String,
    pub target: Target,
    pub notification: Option<Notification>,
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    pub priority: Priority,
    pub created_at_ms: u64,
    /// Seconds from sending; 0 = send to connected devices only, store nothing.
    pub ttl_secs: u64,
    pub collapse_key: Option<String>,
    /// Send at this time instead of now.
    pub send_at_ms: Option<u64>,
    pub idempotency: Option<Idempotency>,
    /// Most entries one device's mailbox holds; the oldest is dropped past it.
    pub mailbox_cap: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReply {
    pub id: String,
    /// Known for device and user targets; `None` for topics, `all` and scheduled pushes.
    pub recipients: Option<u64>,
    /// Set when the push waits for its send time.
    pub scheduled_at_ms: Option<u64>,
    /// The first answer to this idempotency key, returned again; nothing was sent.
    pub replayed: bool,
    /// The message's sequence number when it was sent now.
    pub seq: Option<u64>,
}

fn resolve(
    tables: &mut Tables<'_>,
    app: &str,
    target: &Target,
    strict: bool,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    match target {
        Target::Devices(ids) => {
            let devices = tables.devices()?;
            for id in ids {
                if devices.get((app, id.as_str()))?.is_some() {
                    out.push(id.clone());
                }
            }
            if strict && ids.len() == 1 && out.is_empty() {
                return Err(StoreError::NotFound);
            }
        }
        Target::Users(users) => {
            let index = tables.txn.open_table(USER_DEVICES)?;
            for user in users {
                for row in index.range((app, user.as_str(), "")..)? {
                    let (k, ()) = (row?.0, ());
                    let (a, u, device) = k.value();
                    if a != app || u != user {
                        break;
                    }
                    out.push(device.to_owned());
                }
            }
            out.sort_unstable();
            out.dedup();
        }
        Target::Topic(_) | Target::All => {}
    }
    Ok(out)
}

fn remember(
    tables: &mut Tables<'_>,
    op: &PushOp,
    reply: &PushReply,
    now: u64,
) -> Result<(), StoreError> {
    let Some(idem) = &op.idempotency else {
        return Ok(());
    };
    let record = IdempotencyRecord {
        request_sha256: idem.request_sha256.clone(),
        id: reply.id.clone(),
        recipients: reply.recipients,
        created_at_ms: now,
        scheduled_at_ms: reply.scheduled_at_ms,
    };
    tables.txn.open_table(IDEMPOTENCY)?.insert(
        (op.app.as_str(), idem.key.as_str()),
        to_json("idempotency", &record)?.as_slice(),
    )?;
    tables.txn.open_table(IDEMPOTENCY_EXPIRY)?.insert(
        (
            now + IDEMPOTENCY_WINDOW_MS,
            op.app.as_str(),
            idem.key.as_str(),
        ),
        (),
    )?;
    Ok(())
}

/// Accepts a push: replays an idempotent retry, schedules a future one, or sends it now.
pub(crate) fn push(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    op: PushOp,
) -> Result<PushReply, StoreError> {
    let now = state.clock;
    if let Some(idem) = &op.idempotency {
        let table = tables.txn.open_table(IDEMPOTENCY)?;
        let found = table.get((op.app.as_str(), idem.key.as_str()))?;
        if let Some(v) = found {
            let first: IdempotencyRecord = from_json("idempotency", v.value())?;
            if first.request_sha256 != idem.request_sha256 {
                return Err(StoreError::Conflict(
                    "this idempotency_key was used with a different request in the last 24 hours"
                        .into(),
                ));
            }
            return Ok(PushReply {
                id: first.id,
                recipients: first.recipients,
                scheduled_at_ms: first.scheduled_at_ms,
                replayed: true,
                seq: None,
            });
        }
    }
    if let Some(at) = op.send_at_ms.filter(|&at| at > now) {
        if matches!(&op.target, Target::Devices(_)) {
            resolve(tables, &op.app, &op.target, true)?;
        }
        let record = MessageRecord {
            id: op.id.clone(),
            seq: 0,
            created_at_ms: op.created_at_ms,
            expires_at_ms: at.saturating_add(op.ttl_secs.saturating_mul(1000)),
            target: op.target.summary(),
            targeted: 0,
            delivered: 0,
            acked: 0,
            opened: 0,
            expired: 0,
            pending: 0,
            topic: None,
            lifecycle: Lifecycle::Scheduled,
            send_at_ms: Some(at),
            collapse_key: op.collapse_key.clone(),
            replaced: 0,
            dropped: 0,
            cancelled: 0,
            live_only: false,
            title: kept_title(op.notification.as_ref().and_then(|n| n.title.as_deref())),
        };
        save_message(state, &op.app, record);
        tables.txn.open_table(SCHEDULE)?.insert(
            (at, op.app.as_str(), op.id.as_str()),
            to_json("schedule", &op)?.as_slice(),
        )?;
        let reply = PushReply {
            id: op.id.clone(),
            recipients: None,
            scheduled_at_ms: Some(at),
            replayed: false,
            seq: None,
        };
        remember(tables, &op, &reply, now)?;
        return Ok(reply);
    }
    let reply = send_now(tables, state, &op, true)?;
    remember(tables, &op, &reply, now)?;
    Ok(reply)
}

/// Stores and publishes a push at the writer's current time. `strict` refuses an unknown
/// single device (API calls); released schedules are not strict (the device may be gone).
pub(crate) fn send_now(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    op: &PushOp,
    strict: bool,
) -> Result<PushReply, StoreError> {
    let now = state.clock;
    let app = op.app.as_str();
    let devices = resolve(tables, app, &op.target, strict)?;
    let topic = match &op.target {
        Target::Topic(t) => Some(t.as_str()),
        Target::All => Some(ALL_TOPIC),
        _ => None,
    };
    let seq = state.next_seq;
    state.next_seq += 1;
    let sent_at = state.sent_at(now);
    let frame = encode_message_frame(
        &op.id,
        seq,
        FrameParts {
            notification: op.notification.as_ref(),
            data: op.data.as_ref(),
            topic: topic.filter(|t| *t != ALL_TOPIC),
            collapse_key: op.collapse_key.as_deref(),
            priority: op.priority,
            sent_at: &sent_at,
        },
    )
    .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let expires_at_ms = now.saturating_add(op.ttl_secs.saturating_mul(1000));
    let live_only = op.ttl_secs == 0;
    // What live sessions are told: a `ttl: 0` message is still "now" while it waits in the
    // outbox of a session that was connected when it was sent.
    let live_expires_at_ms = if live_only {
        state.live_only.insert(
            (app.to_owned(), seq),
            (op.id.clone(), now + LIVE_ONLY_WINDOW_MS),
        );
        now + LIVE_ONLY_WINDOW_MS
    } else {
        expires_at_ms
    };
    let mut record = MessageRecord {
        id: op.id.clone(),
        seq,
        created_at_ms: op.created_at_ms,
        expires_at_ms,
        target: op.target.summary(),
        targeted: 0,
        delivered: 0,
        acked: 0,
        opened: 0,
        expired: 0,
        pending: 0,
        topic: topic.map(str::to_owned),
        lifecycle: Lifecycle::Accepted,
        send_at_ms: op.send_at_ms,
        collapse_key: op.collapse_key.clone(),
        replaced: 0,
        dropped: 0,
        cancelled: 0,
        live_only,
        title: kept_title(op.notification.as_ref().and_then(|n| n.title.as_deref())),
    };
    let frame = Bytes::from(frame);
    let entry = MailboxEntry {
        expires_at_ms,
        delivered: false,
        message_id: op.id.clone(),
    }
    .encode();
    if let Some(topic) = topic {
        record.targeted = tables
            .txn
            .open_table(TOPIC_COUNTS)?
            .get((app, topic))?
            .map_or(0, |v| v.value());
        if !live_only {
            tables.bodies()?.insert((app, seq), frame.as_ref())?;
            tables
                .txn
                .open_table(TOPIC_LOG)?
                .insert((app, topic, seq), entry.as_slice())?;
            if let Some(key) = &op.collapse_key {
                collapse_topic(tables, state, app, topic, key, seq)?;
            }
        }
        state.events.push(Committed::Broadcast {
            app: app.to_owned(),
            id: op.id.clone(),
            topic: topic.to_owned(),
            seq,
            expires_at_ms: live_expires_at_ms,
            frame,
        });
    } else {
        record.targeted = devices.len() as u64;
        if !live_only && !devices.is_empty() {
            tables.bodies()?.insert((app, seq), frame.as_ref())?;
            // A push to one device needs no recipients index: its target names the device.
            let indexed = !matches!(&op.target, Target::Devices(ids) if ids.len() == 1);
            for device in &devices {
                if let Some(key) = &op.collapse_key {
                    collapse_device(tables, state, app, device, key, seq)?;
                }
                let held = make_room(tables, state, app, device, op.mailbox_cap)?;
                tables
                    .mailbox()?
                    .insert((app, device.as_str(), seq), entry.as_slice())?;
                if indexed {
                    tables
                        .msg_recipients()?
                        .insert((app, op.id.as_str(), device.as_str()), ())?;
                }
                tables
                    .device_pending()?
                    .insert((app, device.as_str()), held + 1)?;
            }
            record.pending = record.targeted;
        }
        if !devices.is_empty() {
            state.events.push(Committed::Deliver {
                app: app.to_owned(),
                id: op.id.clone(),
                devices,
                seq,
                expires_at_ms: live_expires_at_ms,
                frame,
            });
        }
    }
    if live_only {
        // Nothing to expire; the record (status and counts) is forgotten like any other.
        tables.expiry()?.insert(
            (
                expires_at_ms.saturating_add(RECORD_RETENTION_MS),
                app,
                op.id.as_str(),
            ),
            FORGET_RECORD,
        )?;
    } else {
        tables
            .expiry()?
            .insert((expires_at_ms, app, op.id.as_str()), EXPIRE_CONTENT)?;
    }
    // Collapse and the cap above touch only older messages' records, never this one.
    let recipients = match op.target {
        Target::Topic(_) | Target::All => None,
        _ => Some(record.targeted),
    };
    save_message(state, app, record);
    state.count(app, |s| s.accepted += 1);
    Ok(PushReply {
        id: op.id.clone(),
        recipients,
        scheduled_at_ms: None,
        replayed: false,
        seq: Some(seq),
    })
}

/// A newer message with the same key replaces an older undelivered one for this device.
fn collapse_device(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    device: &str,
    key: &str,
    seq: u64,
) -> Result<(), StoreError> {
    let old = tables
        .txn
        .open_table(COLLAPSE_DEVICE)?
        .get((app, device, key))?
        .map(|v| v.value());
    if let Some(old_seq) = old {
        let entry = tables
            .mailbox()?
            .get((app, device, old_seq))?
            .map(|v| MailboxEntry::decode(v.value()))
            .transpose()?;
        if let Some(entry) = entry.filter(|e| !e.delivered) {
            release_entry(
                tables,
                state,
                app,
                device,
                old_seq,
                &entry,
                Outcome::Replaced,
            )?;
        }
    }
    tables
        .txn
        .open_table(COLLAPSE_DEVICE)?
        .insert((app, device, key), seq)?;
    Ok(())
}

/// A newer topic message with the same key replaces the older one in the topic log:
/// devices that have not received the older one will only get the newer.
fn collapse_topic(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    topic: &str,
    key: &str,
    seq: u64,
) -> Result<(), StoreError> {
    let old = tables
        .txn
        .open_table(COLLAPSE_TOPIC)?
        .insert((app, topic, key), seq)?
        .map(|v| v.value());
    if let Some(old_seq) = old {
        let removed = tables
            .txn
            .open_table(TOPIC_LOG)?
            .remove((app, topic, old_seq))?
            .map(|v| MailboxEntry::decode(v.value()))
            .transpose()?;
        if let Some(entry) = removed {
            tables.bodies()?.remove((app, old_seq))?;
            if let Some(mut m) = load_message(tables, state, app, &entry.message_id)? {
                m.replaced = m.targeted.saturating_sub(m.delivered);
                save_message(state, app, m);
            }
        }
    }
    Ok(())
}

/// Drops the oldest entries of a full mailbox, counting them for the device's `gap` frame.
/// Returns how many entries the mailbox holds after that.
fn make_room(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    device: &str,
    cap: u64,
) -> Result<u64, StoreError> {
    let cap = cap.max(1);
    let mut held = tables
        .device_pending()?
        .get((app, device))?
        .map_or(0, |v| v.value());
    let mut dropped = 0;
    while held >= cap {
        let oldest = first_entry(tables, app, device)?;
        let Some((seq, entry)) = oldest else { break };
        release_entry(tables, state, app, device, seq, &entry, Outcome::Dropped)?;
        held -= 1;
        dropped += 1;
    }
    if dropped > 0 {
        let mut gaps = tables.txn.open_table(GAPS)?;
        let before = gaps.get((app, device))?.map_or(0, |v| v.value());
        gaps.insert((app, device), before + dropped)?;
        state.events.push(Committed::Gap {
            app: app.to_owned(),
            device: device.to_owned(),
        });
        // What the releases left, exactly.
        held = tables
            .device_pending()?
            .get((app, device))?
            .map_or(0, |v| v.value());
    }
    Ok(held)
}

/// The oldest entry of a device's mailbox.
fn first_entry(
    tables: &mut Tables<'_>,
    app: &str,
    device: &str,
) -> Result<Option<(u64, MailboxEntry)>, StoreError> {
    let mailbox = tables.mailbox()?;
    let mut range = mailbox.range((app, device, 0u64)..)?;
    let Some(row) = range.next() else {
        return Ok(None);
    };
    let (k, v) = row?;
    let (a, d, seq) = k.value();
    if a != app || d != device {
        return Ok(None);
    }
    Ok(Some((seq, MailboxEntry::decode(v.value())?)))
}
