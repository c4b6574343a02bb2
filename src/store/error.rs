//! The store's error type: validation outcomes (nothing was written) and storage failures.

/// Errors from the store. `NotFound`, `Conflict` and `Invalid` mean the operation wrote
/// nothing; the others mean the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("the data file {0} is in use by another process (is warbler already running on this data dir?)")]
    AlreadyOpen(String),
    #[error("cannot open the data file {0}: {1}")]
    Open(String, redb::Error),
    #[error("the data file has schema version {found}; this binary understands up to {supported}")]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    #[error("corrupt record in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("the store journal {path}: {reason}")]
    Journal { path: String, reason: String },
    #[error("the store is shutting down")]
    Closed,
    #[error("the commit failed; nothing of this request was written")]
    CommitFailed,
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.into())
            }
        }
    )*};
}

storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl StoreError {
    /// Whether the error means nothing was written because the request itself was refused.
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::NotFound | Self::Conflict(_) | Self::Invalid(_))
    }
}
