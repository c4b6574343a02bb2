//! Writes for apps, credentials and console users (applied by the writer thread).

use redb::{ReadableTable, WriteTransaction};

use super::records::{AppRecord, CredentialRecord, UserRecord};
use super::tables::{
    from_json, to_json, APPS, APP_CREDENTIALS, CONSOLE_USERS, CREDENTIALS, META, META_INITIALIZED,
};
use super::writer::WriterState;
use super::{ops_devices, Committed, StoreError};

/// A new app with its client key and any API keys created with it.
#[derive(Debug, Clone)]
pub struct NewApp {
    pub record: AppRecord,
    pub credentials: Vec<CredentialRecord>,
}

/// A credential (API key, client key or admin token) to insert.
#[derive(Debug, Clone)]
pub struct NewCredential(pub CredentialRecord);

/// Everything the first start creates, in one transaction.
#[derive(Debug, Clone)]
pub struct FirstStartOp {
    pub owner: UserRecord,
    pub admin_token: CredentialRecord,
    pub app: NewApp,
}

pub(crate) fn first_start(txn: &WriteTransaction, op: FirstStartOp) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta.get(META_INITIALIZED)?.is_some() {
        return Err(StoreError::Conflict(
            "the store is initialized already".into(),
        ));
    }
    if txn
        .open_table(APPS)?
        .get(op.app.record.name.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict("the demo app exists already".into()));
    }
    meta.insert(META_INITIALIZED, 1)?;
    drop(meta);
    txn.open_table(CONSOLE_USERS)?.insert(
        op.owner.login.as_str(),
        to_json("console_users", &op.owner)?.as_slice(),
    )?;
    insert_credential(txn, &op.admin_token)?;
    insert_app(txn, &op.app)
}

fn insert_credential(txn: &WriteTransaction, cred: &CredentialRecord) -> Result<(), StoreError> {
    txn.open_table(CREDENTIALS)?
        .insert(cred.id.as_str(), to_json("credentials", cred)?.as_slice())?;
    if let Some(app) = &cred.app {
        txn.open_table(APP_CREDENTIALS)?
            .insert((app.as_str(), cred.id.as_str()), ())?;
    }
    Ok(())
}

fn insert_app(txn: &WriteTransaction, app: &NewApp) -> Result<(), StoreError> {
    txn.open_table(APPS)?.insert(
        app.record.name.as_str(),
        to_json("apps", &app.record)?.as_slice(),
    )?;
    for cred in &app.credentials {
        insert_credential(txn, cred)?;
    }
    Ok(())
}

pub(crate) fn create_app(txn: &WriteTransaction, app: NewApp) -> Result<(), StoreError> {
    if txn
        .open_table(APPS)?
        .get(app.record.name.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict(format!(
            "an app named {:?} exists already",
            app.record.name
        )));
    }
    insert_app(txn, &app)
}

pub(crate) fn update_app(
    txn: &WriteTransaction,
    state: &mut WriterState,
    app: &str,
    update: Box<dyn FnOnce(&mut AppRecord) + Send>,
) -> Result<AppRecord, StoreError> {
    let mut apps = txn.open_table(APPS)?;
    let mut record: AppRecord = match apps.get(app)? {
        Some(v) => from_json("apps", v.value())?,
        None => return Err(StoreError::NotFound),
    };
    let was_suspended = record.suspended;
    update(&mut record);
    app.clone_into(&mut record.name);
    apps.insert(app, to_json("apps", &record)?.as_slice())?;
    if record.suspended && !was_suspended {
        state.events.push(Committed::AppClosed {
            app: app.to_owned(),
        });
    }
    Ok(record)
}

/// Deletes the app, its credentials and all its devices with their mailboxes.
pub(crate) fn delete_app(
    txn: &WriteTransaction,
    state: &mut WriterState,
    app: &str,
) -> Result<(), StoreError> {
    if txn.open_table(APPS)?.get(app)?.is_none() {
        return Err(StoreError::NotFound);
    }
    txn.open_table(APPS)?.remove(app)?;
    let cred_ids: Vec<String> = {
        let table = txn.open_table(APP_CREDENTIALS)?;
        let mut ids = Vec::new();
        for row in table.range((app, "")..)? {
            let (k, _) = row?;
            let (a, id) = k.value();
            if a != app {
                break;
            }
            ids.push(id.to_owned());
        }
        ids
    };
    {
        let mut creds = txn.open_table(CREDENTIALS)?;
        let mut index = txn.open_table(APP_CREDENTIALS)?;
        for id in &cred_ids {
            creds.remove(id.as_str())?;
            index.remove((app, id.as_str()))?;
        }
    }
    for device in ops_devices::device_ids(txn, app)? {
        ops_devices::delete(txn, state, app, &device)?;
    }
    super::ops_messages::delete_app_messages(txn, app)?;
    state.events.push(Committed::AppClosed {
        app: app.to_owned(),
    });
    Ok(())
}

pub(crate) fn create_credential(
    txn: &WriteTransaction,
    cred: NewCredential,
) -> Result<(), StoreError> {
    if let Some(app) = &cred.0.app {
        if txn.open_table(APPS)?.get(app.as_str())?.is_none() {
            return Err(StoreError::NotFound);
        }
    }
    if txn
        .open_table(CREDENTIALS)?
        .get(cred.0.id.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict("credential id collision".into()));
    }
    insert_credential(txn, &cred.0)
}

pub(crate) fn revoke_credential(
    txn: &WriteTransaction,
    app: &str,
    id: &str,
) -> Result<(), StoreError> {
    let mut index = txn.open_table(APP_CREDENTIALS)?;
    if index.get((app, id))?.is_none() {
        return Err(StoreError::NotFound);
    }
    index.remove((app, id))?;
    txn.open_table(CREDENTIALS)?.remove(id)?;
    Ok(())
}
