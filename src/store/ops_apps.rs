//! Writes for apps, credentials and console users (applied by the writer thread).

use redb::ReadableTable;

use super::open_tables::Tables;
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

pub(crate) fn first_start(tables: &mut Tables<'_>, op: FirstStartOp) -> Result<(), StoreError> {
    let mut meta = tables.txn.open_table(META)?;
    if meta.get(META_INITIALIZED)?.is_some() {
        return Err(StoreError::Conflict(
            "the store is initialized already".into(),
        ));
    }
    if tables
        .txn
        .open_table(APPS)?
        .get(op.app.record.name.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict("the demo app exists already".into()));
    }
    meta.insert(META_INITIALIZED, 1)?;
    drop(meta);
    tables.txn.open_table(CONSOLE_USERS)?.insert(
        op.owner.login.as_str(),
        to_json("console_users", &op.owner)?.as_slice(),
    )?;
    insert_credential(tables, &op.admin_token)?;
    insert_app(tables, &op.app)
}

fn insert_credential(tables: &mut Tables<'_>, cred: &CredentialRecord) -> Result<(), StoreError> {
    tables
        .txn
        .open_table(CREDENTIALS)?
        .insert(cred.id.as_str(), to_json("credentials", cred)?.as_slice())?;
    if let Some(app) = &cred.app {
        tables
            .txn
            .open_table(APP_CREDENTIALS)?
            .insert((app.as_str(), cred.id.as_str()), ())?;
    }
    Ok(())
}

fn insert_app(tables: &mut Tables<'_>, app: &NewApp) -> Result<(), StoreError> {
    tables.txn.open_table(APPS)?.insert(
        app.record.name.as_str(),
        to_json("apps", &app.record)?.as_slice(),
    )?;
    for cred in &app.credentials {
        insert_credential(tables, cred)?;
    }
    Ok(())
}

pub(crate) fn create_app(tables: &mut Tables<'_>, app: NewApp) -> Result<(), StoreError> {
    if tables
        .txn
        .open_table(APPS)?
        .get(app.record.name.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict(format!(
            "an app named {:?} exists already",
            app.record.name
        )));
    }
    insert_app(tables, &app)
}

pub(crate) fn update_app(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    update: Box<dyn FnOnce(&mut AppRecord) + Send>,
) -> Result<AppRecord, StoreError> {
    let mut apps = tables.txn.open_table(APPS)?;
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
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
) -> Result<(), StoreError> {
    if tables.txn.open_table(APPS)?.get(app)?.is_none() {
        return Err(StoreError::NotFound);
    }
    // Close its sessions as "app closed" before its devices' own removal events.
    state.events.push(Committed::AppClosed {
        app: app.to_owned(),
    });
    tables.txn.open_table(APPS)?.remove(app)?;
    let cred_ids: Vec<String> = {
        let table = tables.txn.open_table(APP_CREDENTIALS)?;
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
        let mut creds = tables.txn.open_table(CREDENTIALS)?;
        let mut index = tables.txn.open_table(APP_CREDENTIALS)?;
        for id in &cred_ids {
            creds.remove(id.as_str())?;
            index.remove((app, id.as_str()))?;
        }
    }
    for device in ops_devices::device_ids(tables, app)? {
        ops_devices::delete(tables, state, app, &device)?;
    }
    super::msg_cache::forget_app(&mut state.messages, app);
    delete_app_rows(tables, app)?;
    Ok(())
}

pub(crate) fn create_credential(
    tables: &mut Tables<'_>,
    cred: NewCredential,
) -> Result<(), StoreError> {
    if let Some(app) = &cred.0.app {
        if tables.txn.open_table(APPS)?.get(app.as_str())?.is_none() {
            return Err(StoreError::NotFound);
        }
    }
    if tables
        .txn
        .open_table(CREDENTIALS)?
        .get(cred.0.id.as_str())?
        .is_some()
    {
        return Err(StoreError::Conflict("credential id collision".into()));
    }
    insert_credential(tables, &cred.0)
}

pub(crate) fn revoke_credential(
    tables: &mut Tables<'_>,
    app: &str,
    id: &str,
) -> Result<(), StoreError> {
    let mut index = tables.txn.open_table(APP_CREDENTIALS)?;
    if index.get((app, id))?.is_none() {
        return Err(StoreError::NotFound);
    }
    index.remove((app, id))?;
    tables.txn.open_table(CREDENTIALS)?.remove(id)?;
    Ok(())
}

/// Deletes the rows of an app-first table whose first key part is `app`, in one pass.
macro_rules! delete_app_rows {
    ($table:expr, $app:expr, $start:expr, |$k:ident| $owned:expr) => {{
        let table = $table;
        let keys: Vec<_> = {
            let mut out = Vec::new();
            for row in table.range($start)? {
                let ($k, _) = row?;
                if $k.value().0 != $app {
                    break;
                }
                out.push($owned);
            }
            out
        };
        for key in &keys {
            table.remove(key.as_key())?;
        }
    }};
}

/// Owned copies of tuple keys, borrowed back for `remove`.
trait AsKey<'a> {
    type Key;
    fn as_key(&'a self) -> Self::Key;
}

impl<'a> AsKey<'a> for (String, String) {
    type Key = (&'a str, &'a str);
    fn as_key(&'a self) -> Self::Key {
        (self.0.as_str(), self.1.as_str())
    }
}

impl<'a> AsKey<'a> for (String, u64) {
    type Key = (&'a str, u64);
    fn as_key(&'a self) -> Self::Key {
        (self.0.as_str(), self.1)
    }
}

impl<'a> AsKey<'a> for (String, String, String) {
    type Key = (&'a str, &'a str, &'a str);
    fn as_key(&'a self) -> Self::Key {
        (self.0.as_str(), self.1.as_str(), self.2.as_str())
    }
}

impl<'a> AsKey<'a> for (String, String, u64) {
    type Key = (&'a str, &'a str, u64);
    fn as_key(&'a self) -> Self::Key {
        (self.0.as_str(), self.1.as_str(), self.2)
    }
}

/// Everything else an app owns once its devices are gone: messages, bodies, topic logs,
/// topic counts, collapse keys, idempotency keys and statistics. Time-keyed indexes
/// (expiry, schedule) skip rows whose app or message is gone.
fn delete_app_rows(tables: &mut Tables<'_>, app: &str) -> Result<(), StoreError> {
    use super::tables::{COLLAPSE_TOPIC, IDEMPOTENCY, STATS, TOPIC_COUNTS, TOPIC_LOG};
    delete_app_rows!(tables.messages()?, app, (app, "").., |k| (
        k.value().0.to_owned(),
        k.value().1.to_owned()
    ));
    delete_app_rows!(tables.bodies()?, app, (app, 0u64).., |k| (
        k.value().0.to_owned(),
        k.value().1
    ));
    delete_app_rows!(
        &mut tables.txn.open_table(TOPIC_LOG)?,
        app,
        (app, "", 0u64)..,
        |k| (k.value().0.to_owned(), k.value().1.to_owned(), k.value().2)
    );
    delete_app_rows!(
        &mut tables.txn.open_table(TOPIC_COUNTS)?,
        app,
        (app, "")..,
        |k| (k.value().0.to_owned(), k.value().1.to_owned())
    );
    delete_app_rows!(
        &mut tables.txn.open_table(COLLAPSE_TOPIC)?,
        app,
        (app, "", "")..,
        |k| (
            k.value().0.to_owned(),
            k.value().1.to_owned(),
            k.value().2.to_owned()
        )
    );
    delete_app_rows!(tables.msg_recipients()?, app, (app, "", "").., |k| (
        k.value().0.to_owned(),
        k.value().1.to_owned(),
        k.value().2.to_owned()
    ));
    delete_app_rows!(
        &mut tables.txn.open_table(IDEMPOTENCY)?,
        app,
        (app, "")..,
        |k| (k.value().0.to_owned(), k.value().1.to_owned())
    );
    delete_app_rows!(
        &mut tables.txn.open_table(STATS)?,
        app,
        (app, 0u64)..,
        |k| (k.value().0.to_owned(), k.value().1)
    );
    Ok(())
}

/// Appends one audit record, keyed by time and a unique sequence number.
pub(crate) fn audit(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    record: &super::records::AuditRecord,
) -> Result<(), StoreError> {
    let seq = state.next_seq;
    state.next_seq += 1;
    tables
        .txn
        .open_table(super::tables::AUDIT)?
        .insert((record.at_ms, seq), to_json("audit", record)?.as_slice())?;
    Ok(())
}
