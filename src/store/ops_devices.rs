//! Writes for devices: register, bind to a user and topics, touch, delete with mailbox.

use redb::{ReadableTable, WriteTransaction};

use super::records::DeviceRecord;
use super::tables::{
    from_json, to_json, MailboxEntry, APPS, BODIES, DEVICES, DEVICE_HOME, MAILBOX, MESSAGES,
    USER_DEVICES,
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
    pub topics: Option<Vec<String>>,
}

pub(crate) fn register(txn: &WriteTransaction, device: NewDevice) -> Result<(), StoreError> {
    let d = device.0;
    if txn.open_table(APPS)?.get(d.app.as_str())?.is_none() {
        return Err(StoreError::NotFound);
    }
    if txn.open_table(DEVICE_HOME)?.get(d.id.as_str())?.is_some() {
        return Err(StoreError::Conflict("device id collision".into()));
    }
    txn.open_table(DEVICES)?.insert(
        (d.app.as_str(), d.id.as_str()),
        to_json("devices", &d)?.as_slice(),
    )?;
    txn.open_table(DEVICE_HOME)?
        .insert(d.id.as_str(), d.app.as_str())?;
    if let Some(user) = &d.user {
        txn.open_table(USER_DEVICES)?
            .insert((d.app.as_str(), user.as_str(), d.id.as_str()), ())?;
    }
    Ok(())
}

fn load(txn: &WriteTransaction, app: &str, device: &str) -> Result<DeviceRecord, StoreError> {
    match txn.open_table(DEVICES)?.get((app, device))? {
        Some(v) => from_json("devices", v.value()),
        None => Err(StoreError::NotFound),
    }
}

fn save(txn: &WriteTransaction, d: &DeviceRecord) -> Result<(), StoreError> {
    txn.open_table(DEVICES)?.insert(
        (d.app.as_str(), d.id.as_str()),
        to_json("devices", d)?.as_slice(),
    )?;
    Ok(())
}

pub(crate) fn patch(
    txn: &WriteTransaction,
    app: &str,
    device: &str,
    patch: DevicePatch,
) -> Result<DeviceRecord, StoreError> {
    let mut d = load(txn, app, device)?;
    if let Some(user) = patch.user {
        let mut index = txn.open_table(USER_DEVICES)?;
        if let Some(old) = &d.user {
            index.remove((app, old.as_str(), device))?;
        }
        if let Some(new) = &user {
            index.insert((app, new.as_str(), device), ())?;
        }
        d.user = user;
    }
    if let Some(topics) = patch.topics {
        d.topics = topics;
    }
    save(txn, &d)?;
    Ok(d)
}

/// Records the last time a device connected; a vanished device is no error.
pub(crate) fn touch(
    txn: &WriteTransaction,
    app: &str,
    device: &str,
    at_ms: u64,
) -> Result<(), StoreError> {
    match load(txn, app, device) {
        Ok(mut d) => {
            d.last_seen_ms = Some(at_ms);
            save(txn, &d)
        }
        Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// All device ids of an app.
pub(crate) fn device_ids(txn: &WriteTransaction, app: &str) -> Result<Vec<String>, StoreError> {
    let table = txn.open_table(DEVICES)?;
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

pub(crate) fn delete(
    txn: &WriteTransaction,
    state: &mut WriterState,
    app: &str,
    device: &str,
) -> Result<(), StoreError> {
    let d = load(txn, app, device)?;
    txn.open_table(DEVICES)?.remove((app, device))?;
    txn.open_table(DEVICE_HOME)?.remove(device)?;
    if let Some(user) = &d.user {
        txn.open_table(USER_DEVICES)?
            .remove((app, user.as_str(), device))?;
    }
    // Drop the mailbox; each entry releases its hold on the message body.
    let entries: Vec<(u64, MailboxEntry)> = {
        let table = txn.open_table(MAILBOX)?;
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
    let mut mailbox = txn.open_table(MAILBOX)?;
    let mut messages = txn.open_table(MESSAGES)?;
    let mut bodies = txn.open_table(BODIES)?;
    for (seq, entry) in entries {
        mailbox.remove((app, device, seq))?;
        let record = messages
            .get((app, entry.message_id.as_str()))?
            .map(|v| from_json::<super::records::MessageRecord>("messages", v.value()))
            .transpose()?;
        if let Some(mut m) = record {
            m.pending = m.pending.saturating_sub(1);
            if m.pending == 0 {
                bodies.remove((app, seq))?;
            }
            messages.insert((app, m.id.as_str()), to_json("messages", &m)?.as_slice())?;
        }
    }
    state.events.push(Committed::DeviceRemoved {
        app: app.to_owned(),
        device: device.to_owned(),
    });
    Ok(())
}
