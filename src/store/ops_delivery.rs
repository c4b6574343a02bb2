//! Writes on the delivery side: acks (per message for mailboxes, cumulative per topic),
//! delivery and `opened` marks, cancellation, and the one place a mailbox entry is released.

use redb::ReadableTable;

use super::msg_cache;
use super::open_tables::Tables;
use super::records::{Lifecycle, MessageRecord};
use super::tables::{Cursor, MailboxEntry, SCHEDULE, SUBSCRIPTIONS, TOPIC_LOG};
use super::writer::WriterState;
use super::StoreError;
use crate::domain::IdList;

/// The message record as the batch being built sees it (see [`msg_cache`]).
pub(crate) fn load_message(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    id: &str,
) -> Result<Option<MessageRecord>, StoreError> {
    msg_cache::load(tables, &mut state.messages, app, id)
}

/// Replaces a message record; written once when the batch commits.
pub(crate) fn save_message(state: &mut WriterState, app: &str, m: MessageRecord) {
    msg_cache::save(&mut state.messages, app, m);
}

/// Why a mailbox entry leaves the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acked,
    Expired,
    Dropped,
    Replaced,
    Cancelled,
    DeviceRemoved,
}

/// The device a push to exactly one device was stored for, from its record's target
/// (`device:<id>`). Such a push has no `msg_recipients` rows: its target names the device.
pub(crate) fn single_device(target: &str) -> Option<&str> {
    target.strip_prefix("device:")
}

/// The devices a direct message was stored for: its `msg_recipients` rows, and the device
/// its target names when it went to exactly one (stores written before that shortcut have
/// a row for it too; it is listed once).
pub(crate) fn recipients(
    tables: &mut Tables<'_>,
    app: &str,
    id: &str,
    target: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in tables.msg_recipients()?.range((app, id, "")..)? {
        let (k, ()) = (row?.0, ());
        let (a, msg, device) = k.value();
        if a != app || msg != id {
            break;
        }
        out.push(device.to_owned());
    }
    if let Some(device) = single_device(target) {
        if !out.iter().any(|d| d == device) {
            out.push(device.to_owned());
        }
    }
    Ok(out)
}

/// Removes one mailbox entry and updates everything that counts it: the recipients index,
/// the device's pending count, the message's counts, and the body once nobody holds it.
pub(crate) fn release_entry(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    device: &str,
    seq: u64,
    entry: &MailboxEntry,
    outcome: Outcome,
) -> Result<(), StoreError> {
    tables.mailbox()?.remove((app, device, seq))?;
    {
        let pending = tables.device_pending()?;
        let n = pending.get((app, device))?.map_or(0, |v| v.value());
        if n <= 1 {
            pending.remove((app, device))?;
        } else {
            pending.insert((app, device), n - 1)?;
        }
    }
    // The record changes in place; what it adds to the statistics is applied after.
    let (mut acked, mut delivered, mut expired) = (0, 0, 0);
    let mut indexed = true;
    let left = msg_cache::update(tables, &mut state.messages, app, &entry.message_id, |m| {
        indexed = single_device(&m.target).is_none();
        m.pending = m.pending.saturating_sub(1);
        match outcome {
            Outcome::Acked => {
                m.acked += 1;
                acked = 1;
                if !entry.delivered {
                    m.delivered += 1;
                    delivered = 1;
                }
            }
            Outcome::Expired => {
                m.expired += 1;
                expired = 1;
            }
            Outcome::Dropped => {
                m.dropped += 1;
                m.expired += 1;
                expired = 1;
            }
            Outcome::Replaced => m.replaced += 1,
            // A deleted device's copy will never be delivered: it counts with cancellations
            // so the funnel adds up.
            Outcome::Cancelled | Outcome::DeviceRemoved => m.cancelled += 1,
        }
        m.pending
    })?;
    if indexed {
        tables
            .msg_recipients()?
            .remove((app, entry.message_id.as_str(), device))?;
    }
    if left.is_none_or(|pending| pending == 0) {
        tables.bodies()?.remove((app, seq))?;
    }
    if acked + delivered + expired > 0 {
        state.count(app, |s| {
            s.acked += acked;
            s.delivered += delivered;
            s.expired += expired;
        });
    }
    Ok(())
}

/// Acks by message id: a mailbox entry is released; a topic message moves the device's
/// cursor in that topic to its seq (topic acks are cumulative). The ids are applied in
/// sequence order, whatever order the client sent them in, and each topic cursor is read
/// and written once per request. Each id's record is looked up once (a fan-out ack touches
/// one record per delivered message).
pub(crate) fn ack(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    device: &str,
    ids: &IdList,
) -> Result<usize, StoreError> {
    // (seq, id, record slot, kind) of each known message, in sequence order, once each.
    let mut order: Vec<(u64, &str, usize, Kind)> = Vec::with_capacity(ids.len());
    for id in ids.iter() {
        let slot = state.messages.find(tables, app, id)?;
        if let Some(m) = state.messages.get(slot) {
            let kind = if m.live_only {
                Kind::LiveOnly
            } else if m.topic.is_some() {
                Kind::Topic
            } else {
                Kind::Mailbox
            };
            order.push((m.seq, id, slot, kind));
        }
    }
    order.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    order.dedup_by(|a, b| a.1 == b.1);
    // The topics this request touches: almost always one, so a short list, not a map.
    let mut cursors: Vec<(String, Option<(Cursor, bool)>)> = Vec::new();
    let (mut acked, mut n_acked, mut n_delivered) = (0, 0, 0);
    for (seq, _, slot, kind) in order {
        match kind {
            Kind::LiveOnly => {
                // Stored nowhere, so nothing to release and no cursor to move (moving a
                // topic cursor for it could skip stored messages). The ack still counts,
                // bounded by the audience; delivery counts with it.
                if let Some(m) = state.messages.get_mut(slot) {
                    if m.acked < m.targeted {
                        m.acked += 1;
                        m.delivered = m.delivered.max(m.acked);
                        n_acked += 1;
                        acked += 1;
                    }
                }
            }
            Kind::Topic => {
                let Some(topic) = state.messages.get(slot).and_then(|m| m.topic.as_deref()) else {
                    continue;
                };
                let at = if let Some(at) = cursors.iter().position(|(t, _)| t == topic) {
                    at
                } else {
                    let current = tables
                        .txn
                        .open_table(SUBSCRIPTIONS)?
                        .get((app, device, topic))?
                        .map(|v| Cursor::decode(v.value()))
                        .transpose()?;
                    cursors.push((topic.to_owned(), current.map(|c| (c, false))));
                    cursors.len() - 1
                };
                let Some((cursor, changed)) = cursors.get_mut(at).and_then(|(_, c)| c.as_mut())
                else {
                    continue;
                };
                if seq <= cursor.acked {
                    continue;
                }
                cursor.acked = seq;
                *changed = true;
                let first_delivery = cursor.delivered < seq;
                if first_delivery {
                    cursor.delivered = seq;
                }
                if let Some(m) = state.messages.get_mut(slot) {
                    m.acked += 1;
                    if first_delivery {
                        m.delivered += 1;
                    }
                }
                n_acked += 1;
                n_delivered += u64::from(first_delivery);
                acked += 1;
            }
            Kind::Mailbox => {
                let entry = tables
                    .mailbox()?
                    .get((app, device, seq))?
                    .map(|v| MailboxEntry::decode(v.value()))
                    .transpose()?;
                if let Some(entry) = entry {
                    release_entry(tables, state, app, device, seq, &entry, Outcome::Acked)?;
                    acked += 1;
                }
            }
        }
    }
    if n_acked + n_delivered > 0 {
        state.count(app, |s| {
            s.acked += n_acked;
            s.delivered += n_delivered;
        });
    }
    if cursors.iter().any(|(_, c)| matches!(c, Some((_, true)))) {
        let mut subs = tables.txn.open_table(SUBSCRIPTIONS)?;
        for (topic, slot) in &cursors {
            if let Some((cursor, true)) = slot {
                subs.insert((app, device, topic.as_str()), cursor.encode().as_slice())?;
            }
        }
    }
    Ok(acked)
}

/// Where an acked message is held.
#[derive(Clone, Copy)]
enum Kind {
    /// A `ttl: 0` message, stored nowhere.
    LiveOnly,
    /// A topic-log entry (topic or `all`).
    Topic,
    /// A device's mailbox entry.
    Mailbox,
}

/// Counts frames written to a device once each: a mailbox entry's flag, or the device's
/// delivered mark in the topic.
pub(crate) fn delivered(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    device: &str,
    items: &[(u64, Option<String>)],
) -> Result<(), StoreError> {
    for (seq, topic) in items {
        let seq = *seq;
        let message_id = match topic {
            None => {
                let mailbox = tables.mailbox()?;
                let current = mailbox
                    .get((app, device, seq))?
                    .map(|v| MailboxEntry::decode(v.value()))
                    .transpose()?;
                match current {
                    Some(mut entry) if !entry.delivered => {
                        entry.delivered = true;
                        mailbox.insert((app, device, seq), entry.encode().as_slice())?;
                        entry.message_id
                    }
                    Some(_) => continue,
                    None => match live_only_id(state, app, seq) {
                        Some(id) => id,
                        None => continue,
                    },
                }
            }
            Some(topic) => {
                let mut subs = tables.txn.open_table(SUBSCRIPTIONS)?;
                let current = subs
                    .get((app, device, topic.as_str()))?
                    .map(|v| Cursor::decode(v.value()))
                    .transpose()?;
                let Some(mut cursor) = current.filter(|c| c.delivered < seq) else {
                    continue;
                };
                cursor.delivered = seq;
                subs.insert((app, device, topic.as_str()), cursor.encode().as_slice())?;
                drop(subs);
                let log = tables.txn.open_table(TOPIC_LOG)?;
                let entry = log.get((app, topic.as_str(), seq))?;
                match entry.map(|v| MailboxEntry::decode(v.value())).transpose()? {
                    Some(entry) => entry.message_id,
                    None => match live_only_id(state, app, seq) {
                        Some(id) => id,
                        None => continue,
                    },
                }
            }
        };
        let found = msg_cache::update(tables, &mut state.messages, app, &message_id, |m| {
            m.delivered += 1;
        })?;
        if found.is_some() {
            state.count(app, |s| s.delivered += 1);
        }
    }
    Ok(())
}

/// The id of a recent `ttl: 0` message (stored nowhere, so found by its seq).
fn live_only_id(state: &WriterState, app: &str, seq: u64) -> Option<String> {
    state
        .live_only
        .get(&(app.to_owned(), seq))
        .map(|(id, _)| id.clone())
}

/// Counts `opened` reports; unknown ids are ignored and a count never passes `targeted`.
pub(crate) fn opened(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    ids: &IdList,
) -> Result<(), StoreError> {
    for id in ids.iter() {
        let counted = msg_cache::update(tables, &mut state.messages, app, id, |m| {
            if m.opened < m.targeted {
                m.opened += 1;
                true
            } else {
                false
            }
        })?;
        if counted == Some(true) {
            state.count(app, |s| s.opened += 1);
        }
    }
    Ok(())
}

/// What a cancellation removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The push was still waiting for its send time and will not be sent.
    pub scheduled: bool,
    /// Undelivered mailbox copies removed (direct pushes).
    pub pending: u64,
    /// The topic-log entry was removed (topic and `all` pushes): devices that have not
    /// received it will not.
    pub topic: bool,
}

/// Cancels what of a message is not yet delivered.
pub(crate) fn cancel(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    id: &str,
) -> Result<Cancelled, StoreError> {
    let mut m = load_message(tables, state, app, id)?.ok_or(StoreError::NotFound)?;
    let mut out = Cancelled {
        scheduled: false,
        pending: 0,
        topic: false,
    };
    if m.lifecycle == Lifecycle::Scheduled {
        if let Some(at) = m.send_at_ms {
            tables.txn.open_table(SCHEDULE)?.remove((at, app, id))?;
        }
        m.lifecycle = Lifecycle::Cancelled;
        out.scheduled = true;
        save_message(state, app, m);
        return Ok(out);
    }
    if let Some(topic) = m.topic.clone() {
        let removed = tables
            .txn
            .open_table(TOPIC_LOG)?
            .remove((app, topic.as_str(), m.seq))?
            .is_some();
        if removed {
            tables.bodies()?.remove((app, m.seq))?;
            out.topic = true;
            m.cancelled = m.targeted.saturating_sub(m.delivered);
        }
    } else {
        for device in recipients(tables, app, id, &m.target)? {
            let entry = tables
                .mailbox()?
                .get((app, device.as_str(), m.seq))?
                .map(|v| MailboxEntry::decode(v.value()))
                .transpose()?;
            if let Some(entry) = entry.filter(|e| !e.delivered) {
                release_entry(
                    tables,
                    state,
                    app,
                    &device,
                    m.seq,
                    &entry,
                    Outcome::Cancelled,
                )?;
                out.pending += 1;
            }
        }
        m = load_message(tables, state, app, id)?.ok_or(StoreError::NotFound)?;
    }
    if out.pending > 0 || out.topic {
        m.lifecycle = Lifecycle::Cancelled;
    }
    save_message(state, app, m);
    Ok(out)
}
