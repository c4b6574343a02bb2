//! Writes for console users (applied by the writer thread): create, update and delete,
//! keeping at least one owner at all times.

use redb::ReadableTable;

use super::open_tables::Tables;
use super::records::{Role, UserRecord};
use super::tables::{from_json, to_json, CONSOLE_USERS};
use super::StoreError;

/// A change to the console users.
pub enum ConsoleOp {
    /// Adds a user; `Conflict` if the login exists.
    CreateUser(UserRecord),
    /// Applies `update` to a user; `Conflict` if that would leave no owner.
    UpdateUser {
        login: String,
        update: Box<dyn FnOnce(&mut UserRecord) + Send>,
    },
    /// Removes a user; `Conflict` if it is the last owner.
    DeleteUser(String),
}

/// Applies one console change; answers with the user as it is now (or was, when deleted).
pub(crate) fn apply(tables: &mut Tables<'_>, op: ConsoleOp) -> Result<UserRecord, StoreError> {
    let mut table = tables.txn.open_table(CONSOLE_USERS)?;
    match op {
        ConsoleOp::CreateUser(user) => {
            if table.get(user.login.as_str())?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a user named {} exists",
                    user.login
                )));
            }
            table.insert(
                user.login.as_str(),
                to_json("console_users", &user)?.as_slice(),
            )?;
            Ok(user)
        }
        ConsoleOp::UpdateUser { login, update } => {
            let mut user: UserRecord = match table.get(login.as_str())? {
                Some(v) => from_json("console_users", v.value())?,
                None => return Err(StoreError::NotFound),
            };
            let was_owner = user.role == Role::Owner;
            update(&mut user);
            user.login.clone_from(&login);
            if was_owner && user.role != Role::Owner && owners(&table)? <= 1 {
                return Err(StoreError::Conflict(
                    "the last owner cannot lose the owner role".into(),
                ));
            }
            table.insert(login.as_str(), to_json("console_users", &user)?.as_slice())?;
            Ok(user)
        }
        ConsoleOp::DeleteUser(login) => {
            let user: UserRecord = match table.get(login.as_str())? {
                Some(v) => from_json("console_users", v.value())?,
                None => return Err(StoreError::NotFound),
            };
            if user.role == Role::Owner && owners(&table)? <= 1 {
                return Err(StoreError::Conflict(
                    "the last owner cannot be deleted".into(),
                ));
            }
            table.remove(login.as_str())?;
            Ok(user)
        }
    }
}

fn owners(table: &redb::Table<&str, &[u8]>) -> Result<usize, StoreError> {
    let mut n = 0;
    for row in table.iter()? {
        let (_, v) = row?;
        let user: UserRecord = from_json("console_users", v.value())?;
        if user.role == Role::Owner {
            n += 1;
        }
    }
    Ok(n)
}
