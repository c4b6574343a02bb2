//! The first start on an empty data dir: the owner `admin` with a random password, an owner
//! admin token, and the app `demo` with an all-scope API key and a client key. The secrets
//! are written once to `initial-credentials.json` (0600) before the store commits their
//! hashes, so a crash in between leaves a file that the next start simply rewrites.

use std::path::Path;

use serde::Serialize;

use crate::api::provision_app;
use crate::auth::{hash_password, mint_credential, TokenKind};
use crate::domain::{now_ms, random_secret};
use crate::store::records::{Role, Scope, UserRecord};
use crate::store::{FirstStartOp, Store, StoreError};

/// What the first start hands out, exactly as written to `initial-credentials.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct InitialCredentials {
    pub admin_user: String,
    pub admin_password: String,
    pub admin_token: String,
    pub app: String,
    pub api_key: String,
    pub client_key: String,
    pub ca_cert: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FirstStartError {
    #[error("cannot hash the admin password: {0}")]
    Hash(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) async fn run(
    store: &Store,
    data_dir: &Path,
) -> Result<InitialCredentials, FirstStartError> {
    let password = random_secret()[..24].to_owned();
    let password_hash =
        hash_password(&password).map_err(|e| FirstStartError::Hash(e.to_string()))?;
    let (admin_token_record, admin_token) =
        mint_credential(TokenKind::AdminToken, None, "initial owner token", vec![]);
    let (mut app, client_key, _signing_secret) = provision_app("demo");
    let (api_key_record, api_key) = mint_credential(
        TokenKind::ApiKey,
        Some("demo"),
        "initial key",
        vec![Scope::Push, Scope::Read, Scope::Manage],
    );
    app.credentials.push(api_key_record);
    let ca_cert = data_dir.join("tls").join("ca.crt");
    let creds = InitialCredentials {
        admin_user: "admin".into(),
        admin_password: password,
        admin_token,
        app: "demo".into(),
        api_key,
        client_key,
        ca_cert: std::path::absolute(&ca_cert)
            .unwrap_or(ca_cert)
            .display()
            .to_string(),
    };
    let path = data_dir.join("initial-credentials.json");
    let mut json = serde_json::to_vec_pretty(&creds).map_err(|e| FirstStartError::Write {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    json.push(b'\n');
    crate::fsutil::write_atomic(&path, &json, 0o600).map_err(|source| FirstStartError::Write {
        path: path.display().to_string(),
        source,
    })?;
    let owner = UserRecord {
        login: "admin".into(),
        password_hash,
        role: Role::Owner,
        apps: vec![],
        created_at_ms: now_ms(),
    };
    store
        .first_start(FirstStartOp {
            owner,
            admin_token: admin_token_record,
            app,
        })
        .await?;
    tracing::info!(path = %path.display(), "first start: created the owner 'admin' and the app 'demo'");
    Ok(creds)
}
