//! Writes on the push path: store a push for its recipients, acks, delivery marks.

use bytes::Bytes;
use redb::{ReadableTable, WriteTransaction};

use crate::domain::{encode_message_frame, format_rfc3339_ms, Notification, Priority, Target};

use super::records::MessageRecord;
use super::tables::{
    from_json, to_json, MailboxEntry, BODIES, DEVICES, MAILBOX, MESSAGES, USER_DEVICES,
};
use super::writer::WriterState;
use super::{Committed, StoreError};

/// A validated push, ready to store.
#[derive(Debug, Clone)]
pub struct PushOp {
    pub app: String,
    pub id: String,
    pub target: Target,
    pub notification: Option<Notification>,
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    pub priority: Priority,
    pub created_at_ms: u64,
    /// `None` means TTL 0: send to connected devices only, store nothing for others.
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReply {
    pub id: String,
    pub recipients: u64,
    pub seq: u64,
}

fn resolve(txn: &WriteTransaction, app: &str, target: &Target) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    match target {
        Target::Devices(ids) => {
            let devices = txn.open_table(DEVICES)?;
            for id in ids {
                if devices.get((app, id.as_str()))?.is_some() {
                    out.push(id.clone());
                }
            }
            if ids.len() == 1 && out.is_empty() {
                return Err(StoreError::NotFound);
            }
        }
        Target::Users(users) => {
            let index = txn.open_table(USER_DEVICES)?;
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
    }
    Ok(out)
}

pub(crate) fn push(
    txn: &WriteTransaction,
    state: &mut WriterState,
    op: PushOp,
) -> Result<PushReply, StoreError> {
    let devices = resolve(txn, &op.app, &op.target)?;
    let seq = state.next_seq;
    state.next_seq += 1;
    let sent_at = format_rfc3339_ms(op.created_at_ms);
    let frame = encode_message_frame(
        &op.id,
        seq,
        op.notification.as_ref(),
        op.data.as_ref(),
        op.priority,
        &sent_at,
    )
    .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let app = op.app.as_str();
    let stored = op.expires_at_ms.is_some() && !devices.is_empty();
    let expires_at_ms = op.expires_at_ms.unwrap_or(op.created_at_ms);
    if stored {
        txn.open_table(BODIES)?
            .insert((app, seq), frame.as_slice())?;
        let entry = MailboxEntry {
            expires_at_ms,
            delivered: false,
            message_id: op.id.clone(),
        }
        .encode();
        let mut mailbox = txn.open_table(MAILBOX)?;
        for device in &devices {
            mailbox.insert((app, device.as_str(), seq), entry.as_slice())?;
        }
    }
    let targeted = devices.len() as u64;
    let record = MessageRecord {
        id: op.id.clone(),
        seq,
        created_at_ms: op.created_at_ms,
        expires_at_ms,
        target: op.target.summary(),
        targeted,
        delivered: 0,
        acked: 0,
        opened: 0,
        expired: 0,
        pending: if stored { targeted } else { 0 },
    };
    txn.open_table(MESSAGES)?.insert(
        (app, op.id.as_str()),
        to_json("messages", &record)?.as_slice(),
    )?;
    if !devices.is_empty() {
        state.events.push(Committed::Deliver {
            app: op.app.clone(),
            devices,
            seq,
            expires_at_ms,
            frame: Bytes::from(frame),
        });
    }
    Ok(PushReply {
        id: op.id,
        recipients: targeted,
        seq,
    })
}

fn load_message(
    messages: &redb::Table<'_, (&str, &str), &[u8]>,
    app: &str,
    id: &str,
) -> Result<Option<MessageRecord>, StoreError> {
    messages
        .get((app, id))?
        .map(|v| from_json::<MessageRecord>("messages", v.value()))
        .transpose()
}

/// Acks by message id: each removes one mailbox entry of this device.
pub(crate) fn ack(
    txn: &WriteTransaction,
    app: &str,
    device: &str,
    ids: &[String],
) -> Result<usize, StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    let mut mailbox = txn.open_table(MAILBOX)?;
    let mut bodies = txn.open_table(BODIES)?;
    let mut acked = 0;
    for id in ids {
        let Some(mut m) = load_message(&messages, app, id)? else {
            continue;
        };
        let removed = mailbox
            .remove((app, device, m.seq))?
            .map(|v| MailboxEntry::decode(v.value()))
            .transpose()?;
        let Some(entry) = removed else { continue };
        acked += 1;
        m.acked += 1;
        if !entry.delivered {
            m.delivered += 1;
        }
        m.pending = m.pending.saturating_sub(1);
        if m.pending == 0 {
            bodies.remove((app, m.seq))?;
        }
        messages.insert((app, id.as_str()), to_json("messages", &m)?.as_slice())?;
    }
    Ok(acked)
}

/// Marks mailbox entries as written to the device once, counting each message once.
pub(crate) fn delivered(
    txn: &WriteTransaction,
    app: &str,
    device: &str,
    seqs: &[u64],
) -> Result<(), StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    let mut mailbox = txn.open_table(MAILBOX)?;
    for &seq in seqs {
        let current = mailbox
            .get((app, device, seq))?
            .map(|v| MailboxEntry::decode(v.value()))
            .transpose()?;
        let Some(mut entry) = current else { continue };
        if entry.delivered {
            continue;
        }
        entry.delivered = true;
        mailbox.insert((app, device, seq), entry.encode().as_slice())?;
        if let Some(mut m) = load_message(&messages, app, &entry.message_id)? {
            m.delivered += 1;
            messages.insert((app, m.id.as_str()), to_json("messages", &m)?.as_slice())?;
        }
    }
    Ok(())
}

/// Counts `opened` reports; unknown ids are ignored and a count never passes `targeted`.
pub(crate) fn opened(txn: &WriteTransaction, app: &str, ids: &[String]) -> Result<(), StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    for id in ids {
        if let Some(mut m) = load_message(&messages, app, id)? {
            if m.opened < m.targeted {
                m.opened += 1;
                messages.insert((app, id.as_str()), to_json("messages", &m)?.as_slice())?;
            }
        }
    }
    Ok(())
}

/// Removes an app's message records and bodies (its mailboxes are gone with its devices).
pub(crate) fn delete_app_messages(txn: &WriteTransaction, app: &str) -> Result<(), StoreError> {
    let mut messages = txn.open_table(MESSAGES)?;
    let ids: Vec<String> = {
        let mut out = Vec::new();
        for row in messages.range((app, "")..)? {
            let (k, _) = row?;
            let (a, id) = k.value();
            if a != app {
                break;
            }
            out.push(id.to_owned());
        }
        out
    };
    for id in &ids {
        messages.remove((app, id.as_str()))?;
    }
    let mut bodies = txn.open_table(BODIES)?;
    let seqs: Vec<u64> = {
        let mut out = Vec::new();
        for row in bodies.range((app, 0u64)..)? {
            let (k, _) = row?;
            let (a, seq) = k.value();
            if a != app {
                break;
            }
            out.push(seq);
        }
        out
    };
    for seq in seqs {
        bodies.remove((app, seq))?;
    }
    Ok(())
}
