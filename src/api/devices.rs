//! Device API: registration with the client key, and device management with an API key of
//! scope `manage`: `/v1/devices…`, `/v1/users/{user}/devices`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::auth::{mint_device_token, verify_user_token};
use crate::domain::{
    format_rfc3339_ms, now_ms, validate_device_id, validate_topic, validate_user, Platform,
};
use crate::store::records::{DeviceRecord, Scope};
use crate::store::{DevicePatch, NewDevice, MAX_TOPICS};

use super::extract::{ApiJson, ApiKey, ClientKey};
use super::{ApiError, AppState, Method, RouteTable};

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/devices/register", &[Method::POST], post(register));
    t.add(
        "/v1/devices/{id}",
        &[Method::GET, Method::PATCH, Method::DELETE],
        get(get_device).patch(patch_device).delete(delete_device),
    );
    t.add(
        "/v1/users/{user}/devices",
        &[Method::GET],
        get(user_devices),
    );
}

fn validate_topics(field: &str, topics: &[String]) -> Result<(), ApiError> {
    if topics.len() > MAX_TOPICS {
        return Err(ApiError::invalid(format!(
            "{field}: at most {MAX_TOPICS} topics"
        )));
    }
    for t in topics {
        validate_topic(t).map_err(|e| ApiError::invalid(format!("{field}: {}", e.0)))?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    platform: Platform,
    user_token: Option<String>,
}

async fn register(
    State(state): State<AppState>,
    client: ClientKey,
    ApiJson(body): ApiJson<Register>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, topics) = match &body.user_token {
        None => (None, Vec::new()),
        Some(token) => {
            let app = state
                .store
                .app(&client.app)?
                .ok_or_else(|| ApiError::unauthenticated("the credential is invalid or revoked"))?;
            let claims = verify_user_token(token, &app.signing_secret)
                .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
            validate_user(&claims.sub)
                .map_err(|e| ApiError::invalid(format!("user_token.sub: {}", e.0)))?;
            let mut topics = claims.topics;
            topics.sort_unstable();
            topics.dedup();
            validate_topics("user_token.topics", &topics)?;
            (Some(claims.sub), topics)
        }
    };
    let (id, token, token_sha256) = mint_device_token();
    let record = DeviceRecord {
        id: id.clone(),
        app: client.app.clone(),
        platform: body.platform,
        user,
        topics,
        token_sha256,
        created_at_ms: now_ms(),
        last_seen_ms: None,
    };
    state
        .store
        .register_device(NewDevice(record))
        .await
        .map_err(|e| ApiError::from_store(e, "app"))?;
    tracing::debug!(app = %client.app, device = %id, "device registered");
    Ok((
        StatusCode::CREATED,
        Json(json!({"device_id": id, "token": token})),
    ))
}

pub(super) fn device_view(state: &AppState, d: &DeviceRecord) -> serde_json::Value {
    json!({
        "id": d.id,
        "platform": d.platform,
        "user": d.user,
        "topics": d.topics,
        "created_at": format_rfc3339_ms(d.created_at_ms),
        "last_seen": d.last_seen_ms.map(format_rfc3339_ms),
        "online": state.registry.is_online(&d.app, &d.id),
    })
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    validate_device_id(id).map_err(|_| ApiError::not_found("device not found"))
}

async fn get_device(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    key.require(Scope::Manage)?;
    checked_id(&id)?;
    let d = state
        .store
        .device(&key.app, &id)?
        .ok_or_else(|| ApiError::not_found("device not found"))?;
    Ok(Json(device_view(&state, &d)))
}

/// Distinguishes a missing field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(de).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Patch {
    #[serde(default, deserialize_with = "present")]
    user: Option<Option<String>>,
    topics: Option<Vec<String>>,
}

async fn patch_device(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Patch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    key.require(Scope::Manage)?;
    patch_in(&state, &key.app, &id, body).await.map(Json)
}

/// Binds a device of `app` to a user and/or sets its topics.
pub(super) async fn patch_in(
    state: &AppState,
    app: &str,
    id: &str,
    body: Patch,
) -> Result<serde_json::Value, ApiError> {
    checked_id(id)?;
    if let Some(Some(user)) = &body.user {
        validate_user(user).map_err(|e| ApiError::invalid(format!("user: {}", e.0)))?;
    }
    let topics = match body.topics {
        Some(mut t) => {
            t.sort_unstable();
            t.dedup();
            validate_topics("topics", &t)?;
            Some(t)
        }
        None => None,
    };
    let patch = DevicePatch {
        user: body.user,
        topics,
        ..DevicePatch::default()
    };
    let d = state
        .store
        .patch_device(app, id, patch)
        .await
        .map_err(|e| ApiError::from_store(e, "device"))?;
    Ok(device_view(state, &d))
}

async fn delete_device(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    key.require(Scope::Manage)?;
    delete_in(&state, &key.app, &id).await
}

/// Deletes a device of `app`, its user binding and its mailbox.
pub(super) async fn delete_in(
    state: &AppState,
    app: &str,
    id: &str,
) -> Result<StatusCode, ApiError> {
    checked_id(id)?;
    state
        .store
        .delete_device(app, id)
        .await
        .map_err(|e| ApiError::from_store(e, "device"))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_devices(
    State(state): State<AppState>,
    key: ApiKey,
    Path(user): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    key.require(Scope::Manage)?;
    validate_user(&user).map_err(|e| ApiError::invalid(format!("user: {}", e.0)))?;
    let devices: Vec<_> = state
        .store
        .user_devices(&key.app, &user, 1000)?
        .iter()
        .map(|d| device_view(&state, d))
        .collect();
    Ok(Json(json!({"user": user, "devices": devices})))
}
