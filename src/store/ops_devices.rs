//! Writes for devices: register (subscribed to `all` and its token's topics), bind to a
//! user, change topics (cursors start at the current seq: no backlog), touch, delete with
//! everything the device holds.

use redb::ReadableTable;

use super::open_tables::Tables;
use super::ops_delivery::{release_entry, Outcome};
use super::records::DeviceRecord;
use super::tables::{
    from_json, to_json, Cursor, MailboxEntry, ALL_TOPIC, APPS, COLLAPSE_DEVICE, DEVICE_HOME, GAPS,
    SUBSCRIPTIONS, TOPIC_COUNTS, USER_DEVICES,
};
use super::writer::WriterState;
use super::{Committed, StoreError};

/// A device to register.
#[derive(Debug, Clone)]
pub struct NewDevice(pub DeviceRecord);

/// Changes to a device; `None` leaves a field alone, `Some(None)` clears the user.
#[derive(Debug, Clone, Default)]
pub struct DevicePatch {
    pub user: Option<Option<String>>,
    /// Replace the topic list.
    pub topics: Option<Vec<String>>,
    /// Add these topics (client `subscribe` frames).
    pub subscribe: Vec<String>,
    /// Remove these topics (client `unsubscribe` frames).
    pub unsubscribe: Vec<String>,
}

/// Most topics one device may hold.
pub const MAX_TOPICS: usize = 64;

fn subscribe(
    tables: &mut Tables<'_>,
    state: &WriterState,
    app: &str,
    device: &str,
    topic: &str,
) -> Result<(), StoreError> {
    let mut subs = tables.txn.open_table(SUBSCRIPTIONS)?;
    if subs.get((app, device, topic))?.is_some() {
        return Ok(());
    }
    let now = state.next_seq.saturating_sub(1);
    let cursor = Cursor {
        acked: now,
        delivered: now,
    };
    subs.insert((app, device, topic), cursor.encode().as_slice())?;
    let mut counts = tables.txn.open_table(TOPIC_COUNTS)?;
    let n = counts.get((app, topic))?.map_or(0, |v| v.value());
    counts.insert((app, topic), n + 1)?;
    Ok(())
}

fn unsubscribe(
    tables: &mut Tables<'_>,
    app: &str,
    device: &str,
    topic: &str,
) -> Result<(), StoreError> {
    if tables
        .txn
        .open_table(SUBSCRIPTIONS)?
        .remove((app, device, topic))?
        .is_none()
    {
        return Ok(());
    }
    let mut counts = tables.txn.open_table(TOPIC_COUNTS)?;
    let n = counts.get((app, topic))?.map_or(0, |v| v.value());
    if n <= 1 {
        counts.remove((app, topic))?;
    } else {
        counts.insert((app, topic), n - 1)?;
    }
    Ok(())
}

fn topics_changed(state: &mut WriterState, d: &DeviceRecord) {
    state.events.push(Committed::TopicsChanged {
        app: d.app.clone(),
        device: d.id.clone(),
        topics: d.topics.clone(),
    });
}

pub(crate) fn register(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    device: NewDevice,
) -> Result<(), StoreError> {
    let d = device.0;
    if tables.txn.open_table(APPS)?.get(d.app.as_str())?.is_none() {
        return Err(StoreError::NotFound);
    }
    if tables
        .txn
        .open_table(DEVICE_HOME)?
        .get(d.id.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict("device id collision".into()));
    }
    tables.devices()?.insert(
        (d.app.as_str(), d.id.as_str()),
        to_json("devices", &d)?.as_slice(),
    )?;
    tables
        .txn
        .open_table(DEVICE_HOME)?
        .insert(d.id.as_str(), d.app.as_str())?;
    if let Some(user) = &d.user {
        tables
            .txn
            .open_table(USER_DEVICES)?
            .insert((d.app.as_str(), user.as_str(), d.id.as_str()), ())?;
    }
    subscribe(tables, state, &d.app, &d.id, ALL_TOPIC)?;
    for topic in &d.topics {
        subscribe(tables, state, &d.app, &d.id, topic)?;
    }
    Ok(())
}

/// A device's record, with its last-seen time from the last-seen table where that is newer.
fn load(tables: &mut Tables<'_>, app: &str, device: &str) -> Result<DeviceRecord, StoreError> {
    let mut d: DeviceRecord = match tables.devices()?.get((app, device))? {
        Some(v) => from_json("devices", v.value())?,
        None => return Err(StoreError::NotFound),
    };
    if let Some(at) = tables.last_seen()?.get((app, device))? {
        d.last_seen_ms = d.last_seen_ms.max(Some(at.value()));
    }
    Ok(d)
}

fn save(tables: &mut Tables<'_>, d: &DeviceRecord) -> Result<(), StoreError> {
    tables.devices()?.insert(
        (d.app.as_str(), d.id.as_str()),
        to_json("devices", d)?.as_slice(),
    )?;
    Ok(())
}

pub(crate) fn patch(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    device: &str,
    patch: DevicePatch,
) -> Result<DeviceRecord, StoreError> {
    let mut d = load(tables, app, device)?;
    let mut topics = patch.topics.clone().unwrap_or_else(|| d.topics.clone());
    for t in &patch.subscribe {
        if !topics.contains(t) {
            topics.push(t.clone());
        }
    }
    topics.retain(|t| !patch.unsubscribe.contains(t));
    topics.sort_unstable();
    topics.dedup();
    if topics.len() > MAX_TOPICS {
        return Err(StoreError::Invalid(format!(
            "a device holds at most {MAX_TOPICS} topics"
        )));
    }
    if let Some(user) = patch.user {
        let mut index = tables.txn.open_table(USER_DEVICES)?;
        if let Some(old) = &d.user {
            index.remove((app, old.as_str(), device))?;
        }
        if let Some(new) = &user {
            index.insert((app, new.as_str(), device), ())?;
        }
        d.user = user;
    }
    if topics != d.topics {
        for old in &d.topics {
            if !topics.contains(old) {
                unsubscribe(tables, app, device, old)?;
            }
        }
        for new in &topics {
            subscribe(tables, state, app, device, new)?;
        }
        d.topics = topics;
        topics_changed(state, &d);
    }
    save(tables, &d)?;
    Ok(d)
}

/// Records the last time a device connected, in its own small row (the device record
/// stays as it is); a vanished device is no error and leaves no row.
pub(crate) fn touch(
    tables: &mut Tables<'_>,
    app: &str,
    device: &str,
    at_ms: u64,
) -> Result<(), StoreError> {
    if tables.devices()?.get((app, device))?.is_none() {
        return Ok(());
    }
    tables.last_seen()?.insert((app, device), at_ms)?;
    Ok(())
}

/// All device ids of an app.
pub(crate) fn device_ids(tables: &mut Tables<'_>, app: &str) -> Result<Vec<String>, StoreError> {
    let table = tables.devices()?;
    let mut out = Vec::new();
    for row in table.range((app, "")..)? {
        let (k, _) = row?;
        let (a, id) = k.value();
        if a != app {
            break;
        }
        out.push(id.to_owned());
    }
    Ok(out)
}

/// Keys `(app, device, x)` of a table keyed by device first, for deletion.
fn device_rows<V: redb::Value + 'static>(
    table: &redb::Table<'_, (&'static str, &'static str, &'static str), V>,
    app: &str,
    device: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((app, device, "")..)? {
        let (k, _) = row?;
        let (a, d, x) = k.value();
        if a != app || d != device {
            break;
        }
        out.push(x.to_owned());
    }
    Ok(out)
}

pub(crate) fn delete(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    device: &str,
) -> Result<(), StoreError> {
    let d = load(tables, app, device)?;
    tables.devices()?.remove((app, device))?;
    tables.last_seen()?.remove((app, device))?;
    tables.txn.open_table(DEVICE_HOME)?.remove(device)?;
    if let Some(user) = &d.user {
        tables
            .txn
            .open_table(USER_DEVICES)?
            .remove((app, user.as_str(), device))?;
    }
    let entries: Vec<(u64, MailboxEntry)> = {
        let table = tables.mailbox()?;
        let mut out = Vec::new();
        for row in table.range((app, device, 0u64)..)? {
            let (k, v) = row?;
            let (a, dev, seq) = k.value();
            if a != app || dev != device {
                break;
            }
            out.push((seq, MailboxEntry::decode(v.value())?));
        }
        out
    };
    for (seq, entry) in entries {
        release_entry(
            tables,
            state,
            app,
            device,
            seq,
            &entry,
            Outcome::DeviceRemoved,
        )?;
    }
    let topics = device_rows(&tables.txn.open_table(SUBSCRIPTIONS)?, app, device)?;
    for topic in topics {
        unsubscribe(tables, app, device, &topic)?;
    }
    let keys = device_rows(&tables.txn.open_table(COLLAPSE_DEVICE)?, app, device)?;
    for key in keys {
        tables
            .txn
            .open_table(COLLAPSE_DEVICE)?
            .remove((app, device, key.as_str()))?;
    }
    tables.device_pending()?.remove((app, device))?;
    tables.txn.open_table(GAPS)?.remove((app, device))?;
    state.events.push(Committed::DeviceRemoved {
        app: app.to_owned(),
        device: device.to_owned(),
    });
    Ok(())
}

/// Subtracts what a session told its device from the device's gap count.
pub(crate) fn clear_gap(
    tables: &mut Tables<'_>,
    app: &str,
    device: &str,
    told: u64,
) -> Result<(), StoreError> {
    let mut gaps = tables.txn.open_table(GAPS)?;
    let n = gaps.get((app, device))?.map_or(0, |v| v.value());
    if n <= told {
        gaps.remove((app, device))?;
    } else {
        gaps.insert((app, device), n - told)?;
    }
    Ok(())
}
