//! The tables every push and ack touches, each opened once per group commit instead of
//! once per use: opening a redb table walks the table tree and registers it with the
//! transaction, which cost the writer more than the inserts themselves.
//!
//! Rule: on the write side, these tables are reached only through [`Tables`] (redb refuses
//! to open a table twice in one transaction); every other table is opened from
//! [`Tables::txn`] where it is used.

use redb::{Table, TableDefinition, WriteTransaction};

use super::tables::{
    BODIES, DEVICES, DEVICE_PENDING, EXPIRY, LAST_SEEN, MAILBOX, MESSAGES, MSG_RECIPIENTS,
};
use super::StoreError;

type Slot<'t, K, V> = Option<Table<'t, K, V>>;

/// The write transaction of one group commit, with its hot tables opened on first use and
/// kept open until the batch commits.
pub(crate) struct Tables<'t> {
    pub txn: &'t WriteTransaction,
    devices: Slot<'t, (&'static str, &'static str), &'static [u8]>,
    messages: Slot<'t, (&'static str, &'static str), &'static [u8]>,
    bodies: Slot<'t, (&'static str, u64), &'static [u8]>,
    mailbox: Slot<'t, (&'static str, &'static str, u64), &'static [u8]>,
    msg_recipients: Slot<'t, (&'static str, &'static str, &'static str), ()>,
    device_pending: Slot<'t, (&'static str, &'static str), u64>,
    expiry: Slot<'t, (u64, &'static str, &'static str), u8>,
    last_seen: Slot<'t, (&'static str, &'static str), u64>,
}

fn open<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Slot<'t, K, V>,
    txn: &'t WriteTransaction,
    def: TableDefinition<'static, K, V>,
) -> Result<&'s mut Table<'t, K, V>, StoreError> {
    if slot.is_none() {
        *slot = Some(txn.open_table(def)?);
    }
    // Just filled when it was empty.
    slot.as_mut().ok_or(StoreError::CommitFailed)
}

macro_rules! getters {
    ($($name:ident: $def:ident => $k:ty, $v:ty;)*) => {
        $(
            pub fn $name(&mut self) -> Result<&mut Table<'t, $k, $v>, StoreError> {
                open(&mut self.$name, self.txn, $def)
            }
        )*
    };
}

impl<'t> Tables<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Self {
        Self {
            txn,
            devices: None,
            messages: None,
            bodies: None,
            mailbox: None,
            msg_recipients: None,
            device_pending: None,
            expiry: None,
            last_seen: None,
        }
    }

    getters! {
        devices: DEVICES => (&'static str, &'static str), &'static [u8];
        messages: MESSAGES => (&'static str, &'static str), &'static [u8];
        bodies: BODIES => (&'static str, u64), &'static [u8];
        mailbox: MAILBOX => (&'static str, &'static str, u64), &'static [u8];
        msg_recipients: MSG_RECIPIENTS => (&'static str, &'static str, &'static str), ();
        device_pending: DEVICE_PENDING => (&'static str, &'static str), u64;
        expiry: EXPIRY => (u64, &'static str, &'static str), u8;
        last_seen: LAST_SEEN => (&'static str, &'static str), u64;
    }
}
