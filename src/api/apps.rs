//! Management API for apps and their keys (admin token): `/v1/apps…`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{mint_credential, TokenKind};
use crate::domain::{format_rfc3339_ms, now_ms, random_secret, validate_app_name};
use crate::store::records::{AppLimits, AppRecord, CredentialKind, CredentialRecord, Scope};
use crate::store::NewApp;

use super::admin::audit;
use super::extract::{Admin, ApiJson};
use super::{ApiError, AppState, Method, RouteTable};

pub fn routes(t: &mut RouteTable) {
    t.add(
        "/v1/apps",
        &[Method::GET, Method::POST],
        get(list_apps).post(create_app),
    );
    t.add(
        "/v1/apps/{app}",
        &[Method::GET, Method::PATCH, Method::DELETE],
        get(get_app).patch(patch_app).delete(delete_app),
    );
    t.add(
        "/v1/apps/{app}/keys",
        &[Method::GET, Method::POST],
        get(list_keys).post(create_key),
    );
    t.add(
        "/v1/apps/{app}/keys/{id}",
        &[Method::DELETE],
        delete(revoke_key),
    );
    t.add(
        "/v1/apps/{app}/client-key",
        &[Method::POST],
        post(rotate_client_key),
    );
    t.add(
        "/v1/apps/{app}/signing-secret",
        &[Method::POST],
        post(rotate_signing_secret),
    );
}

/// A new app with its client key; returns the app, the client key and the signing secret.
#[must_use]
pub fn provision_app(name: &str) -> (NewApp, String, String) {
    let signing_secret = random_secret();
    let (client, client_key) =
        mint_credential(TokenKind::ClientKey, Some(name), "client key", vec![]);
    let record = AppRecord {
        name: name.to_owned(),
        created_at_ms: now_ms(),
        suspended: false,
        signing_secret: signing_secret.clone(),
        limits: AppLimits::default(),
        allow_client_subscribe: false,
    };
    (
        NewApp {
            record,
            credentials: vec![client],
        },
        client_key,
        signing_secret,
    )
}

#[derive(Serialize)]
struct AppView {
    id: String,
    name: String,
    created_at: String,
    suspended: bool,
    limits: AppLimits,
    allow_client_subscribe: bool,
}

fn view(r: &AppRecord) -> AppView {
    AppView {
        id: r.name.clone(),
        name: r.name.clone(),
        created_at: format_rfc3339_ms(r.created_at_ms),
        suspended: r.suspended,
        limits: r.limits.clone(),
        allow_client_subscribe: r.allow_client_subscribe,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: String,
}

async fn create_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<impl IntoResponse, ApiError> {
    validate_app_name(&body.name).map_err(|e| ApiError::invalid(format!("name: {}", e.0)))?;
    let (app, client_key, signing_secret) = provision_app(&body.name);
    state
        .store
        .create_app(app)
        .await
        .map_err(|e| ApiError::from_store(e, "app"))?;
    tracing::info!(app = %body.name, by = %admin.actor, "app created");
    audit(&state, &admin, "app.create", Some(&body.name), None).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": body.name, "client_key": client_key, "signing_secret": signing_secret})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_apps(
    State(state): State<AppState>,
    admin: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let apps = match &admin.apps {
        None => state.store.apps(q.after.as_deref(), limit)?,
        // A scoped user pages through its own apps (sorted), not through every app.
        Some(mine) => {
            let mut names: Vec<&String> = mine
                .iter()
                .filter(|a| q.after.as_ref().is_none_or(|after| *a > after))
                .collect();
            names.sort_unstable();
            let mut out = Vec::new();
            for name in names.into_iter().take(limit) {
                if let Some(app) = state.store.app(name)? {
                    out.push(app);
                }
            }
            out
        }
    };
    let views: Vec<AppView> = apps.iter().map(view).collect();
    Ok(Json(json!({ "apps": views })))
}

fn find_app(state: &AppState, app: &str) -> Result<AppRecord, ApiError> {
    state
        .store
        .app(app)?
        .ok_or_else(|| ApiError::not_found("app not found"))
}

async fn get_app(
    State(state): State<AppState>,
    _admin: Admin,
    Path(app): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    Ok(Json(view(&find_app(&state, &app)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchApp {
    suspended: Option<bool>,
    limits: Option<LimitsPatch>,
    allow_client_subscribe: Option<bool>,
}

/// Limits to change: a field left out stays as it is; `null` goes back to the default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsPatch {
    #[serde(default, deserialize_with = "present")]
    max_message_bytes: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    max_ttl: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    default_ttl: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    mailbox_cap: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pushes_per_second: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    max_connections: Option<Option<u64>>,
}

/// Distinguishes a missing field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(de).map(Some)
}

impl LimitsPatch {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(Some(b)) = self.max_message_bytes {
            if !(64..=1_048_576).contains(&b) {
                return Err(ApiError::invalid(
                    "limits.max_message_bytes must be between 64 and 1048576",
                ));
            }
        }
        if let Some(Some(c)) = self.mailbox_cap {
            if !(1..=1_000_000).contains(&c) {
                return Err(ApiError::invalid(
                    "limits.mailbox_cap must be between 1 and 1000000",
                ));
            }
        }
        if self.max_connections == Some(Some(0)) {
            return Err(ApiError::invalid(
                "limits.max_connections must be at least 1",
            ));
        }
        if self.pushes_per_second == Some(Some(0)) {
            return Err(ApiError::invalid(
                "limits.pushes_per_second must be at least 1",
            ));
        }
        if self.max_ttl == Some(Some(0)) {
            return Err(ApiError::invalid("limits.max_ttl must be at least 1"));
        }
        Ok(())
    }

    fn apply(self, l: &mut AppLimits) {
        if let Some(v) = self.max_message_bytes {
            l.max_message_bytes = v;
        }
        if let Some(v) = self.max_ttl {
            l.max_ttl = v;
        }
        if let Some(v) = self.default_ttl {
            l.default_ttl = v;
        }
        if let Some(v) = self.mailbox_cap {
            l.mailbox_cap = v;
        }
        if let Some(v) = self.pushes_per_second {
            l.pushes_per_second = v;
        }
        if let Some(v) = self.max_connections {
            l.max_connections = v;
        }
    }
}

async fn patch_app(
    State(state): State<AppState>,
    admin: Admin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<PatchApp>,
) -> Result<Json<AppView>, ApiError> {
    if let Some(l) = &body.limits {
        l.validate()?;
    }
    let record = state
        .store
        .update_app(
            &app,
            Box::new(move |r| {
                if let Some(s) = body.suspended {
                    r.suspended = s;
                }
                if let Some(a) = body.allow_client_subscribe {
                    r.allow_client_subscribe = a;
                }
                if let Some(l) = body.limits {
                    l.apply(&mut r.limits);
                }
            }),
        )
        .await
        .map_err(|e| ApiError::from_store(e, "app"))?;
    tracing::info!(app = %app, by = %admin.actor, suspended = record.suspended, "app updated");
    audit(&state, &admin, "app.update", Some(&app), None).await?;
    Ok(Json(view(&record)))
}

async fn delete_app(
    State(state): State<AppState>,
    admin: Admin,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_app(&app)
        .await
        .map_err(|e| ApiError::from_store(e, "app"))?;
    super::users::forget_app(&state, &app).await?;
    tracing::info!(app = %app, by = %admin.actor, "app deleted");
    audit(&state, &admin, "app.delete", Some(&app), None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: Option<String>,
    scopes: Vec<Scope>,
}

async fn create_key(
    State(state): State<AppState>,
    admin: Admin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    let name = body.name.unwrap_or_else(|| "api key".into());
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name: 1-64 characters, no control characters",
        ));
    }
    let mut scopes = body.scopes;
    scopes.sort_unstable();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(ApiError::invalid(
            "scopes: name at least one of push, read, manage",
        ));
    }
    find_app(&state, &app)?;
    let (record, key) = mint_credential(TokenKind::ApiKey, Some(&app), &name, scopes);
    let id = record.id.clone();
    state
        .store
        .create_credential(crate::store::NewCredential(record))
        .await
        .map_err(|e| ApiError::from_store(e, "app"))?;
    tracing::info!(app = %app, key = %id, by = %admin.actor, "API key created");
    audit(&state, &admin, "key.create", Some(&app), Some(&id)).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "key": key}))))
}

fn key_view(r: &CredentialRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "name": r.name,
        "kind": match r.kind {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::ClientKey => "client_key",
            CredentialKind::AdminToken => "admin_token",
        },
        "scopes": r.scopes,
        "created_at": format_rfc3339_ms(r.created_at_ms),
    })
}

async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
    Path(app): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    find_app(&state, &app)?;
    let keys: Vec<_> = state
        .store
        .app_credentials(&app)?
        .iter()
        .map(key_view)
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

async fn revoke_key(
    State(state): State<AppState>,
    admin: Admin,
    Path((app, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .revoke_credential(&app, &id)
        .await
        .map_err(|e| ApiError::from_store(e, "key"))?;
    tracing::info!(app = %app, key = %id, by = %admin.actor, "key revoked");
    audit(&state, &admin, "key.revoke", Some(&app), Some(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new client key for the app and revokes the old one(s).
async fn rotate_client_key(
    State(state): State<AppState>,
    admin: Admin,
    Path(app): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    find_app(&state, &app)?;
    let old: Vec<String> = state
        .store
        .app_credentials(&app)?
        .into_iter()
        .filter(|c| c.kind == CredentialKind::ClientKey)
        .map(|c| c.id)
        .collect();
    let (record, key) = mint_credential(TokenKind::ClientKey, Some(&app), "client key", vec![]);
    let id = record.id.clone();
    state
        .store
        .create_credential(crate::store::NewCredential(record))
        .await
        .map_err(|e| ApiError::from_store(e, "app"))?;
    for old_id in old {
        match state.store.revoke_credential(&app, &old_id).await {
            Ok(()) | Err(crate::store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(app = %app, key = %id, by = %admin.actor, "client key rotated");
    audit(&state, &admin, "client_key.rotate", Some(&app), Some(&id)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "client_key": key})),
    ))
}

/// Replaces the app's user-token signing secret. Devices already registered keep working;
/// new registrations need tokens signed with the new secret.
async fn rotate_signing_secret(
    State(state): State<AppState>,
    admin: Admin,
    Path(app): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let secret = random_secret();
    let new = secret.clone();
    state
        .store
        .update_app(&app, Box::new(move |r| r.signing_secret = new))
        .await
        .map_err(|e| ApiError::from_store(e, "app"))?;
    tracing::info!(app = %app, by = %admin.actor, "signing secret rotated");
    audit(&state, &admin, "signing_secret.rotate", Some(&app), None).await?;
    Ok(Json(json!({"signing_secret": secret})))
}
