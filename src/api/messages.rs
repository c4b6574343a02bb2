//! Server API for messages (API key): `POST /v1/messages`, `GET /v1/messages/{id}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::domain::{format_rfc3339_ms, now_ms, random_id, validate_message_id, MessageInput};
use crate::store::records::{MessageRecord, Scope};
use crate::store::PushOp;

use super::extract::{ApiJson, ApiKey};
use super::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/messages/{id}", get(status))
}

/// Size of the payload that counts against `max_message_bytes`: notification + data, JSON.
fn payload_bytes(input: &MessageInput) -> usize {
    let n = input
        .notification
        .as_ref()
        .and_then(|n| serde_json::to_vec(n).ok())
        .map_or(0, |v| v.len());
    let d = input
        .data
        .as_ref()
        .and_then(|d| serde_json::to_vec(d).ok())
        .map_or(0, |v| v.len());
    n + d
}

async fn send(
    State(state): State<AppState>,
    key: ApiKey,
    headers: HeaderMap,
    ApiJson(input): ApiJson<MessageInput>,
) -> Result<impl IntoResponse, ApiError> {
    key.require(Scope::Push)?;
    if headers.contains_key("idempotency-key") || input.idempotency_key.is_some() {
        return Err(ApiError::invalid(
            "idempotency_key: not supported by this server version yet; send without it",
        ));
    }
    if input.send_at.is_some() {
        return Err(ApiError::invalid(
            "send_at: not supported by this server version yet",
        ));
    }
    if input.collapse_key.is_some() {
        return Err(ApiError::invalid(
            "collapse_key: not supported by this server version yet",
        ));
    }
    if input.notification.is_none() && input.data.is_none() {
        return Err(ApiError::invalid(
            "a message needs notification, data or both",
        ));
    }
    let app = state
        .store
        .app(&key.app)?
        .ok_or_else(|| ApiError::unauthenticated("the credential is invalid or revoked"))?;
    let limits = &state.config.limits;
    let max_bytes = app
        .limits
        .max_message_bytes
        .unwrap_or(limits.max_message_bytes) as usize;
    let size = payload_bytes(&input);
    if size > max_bytes {
        return Err(ApiError::too_large(format!(
            "notification + data is {size} bytes; this app allows {max_bytes}"
        )));
    }
    let max_ttl = app.limits.max_ttl.unwrap_or(limits.max_ttl);
    let ttl = input.ttl.unwrap_or_else(|| {
        app.limits
            .default_ttl
            .unwrap_or(limits.default_ttl)
            .min(max_ttl)
    });
    if ttl > max_ttl {
        return Err(ApiError::invalid(format!(
            "ttl: at most {max_ttl} seconds for this app"
        )));
    }
    let target = input
        .to
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let created_at_ms = now_ms();
    let op = PushOp {
        app: key.app.clone(),
        id: random_id("msg"),
        target,
        notification: input.notification,
        data: input.data,
        priority: input.priority.unwrap_or_default(),
        created_at_ms,
        expires_at_ms: (ttl > 0).then(|| created_at_ms.saturating_add(ttl.saturating_mul(1000))),
    };
    let reply = state
        .store
        .push(op)
        .await
        .map_err(|e| ApiError::from_store(e, "device"))?;
    tracing::debug!(app = %key.app, key = %key.key_id, message = %reply.id, recipients = reply.recipients, "push accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": reply.id, "recipients": reply.recipients})),
    ))
}

/// The state of a push as one word, from its counts.
fn message_state(m: &MessageRecord, now: u64) -> &'static str {
    if m.targeted == 0 {
        "no_recipients"
    } else if m.acked >= m.targeted {
        "acked"
    } else if m.pending > 0 && m.expires_at_ms <= now {
        "expired"
    } else if m.delivered >= m.targeted {
        "delivered"
    } else {
        "pending"
    }
}

async fn status(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    key.require(Scope::Read)?;
    let not_found = || ApiError::not_found("message not found");
    validate_message_id(&id).map_err(|_| not_found())?;
    let m = state.store.message(&key.app, &id)?.ok_or_else(not_found)?;
    let now = now_ms();
    let expired = if m.expires_at_ms <= now {
        m.expired.max(m.pending)
    } else {
        m.expired
    };
    Ok(Json(json!({
        "id": m.id,
        "state": message_state(&m, now),
        "created_at": format_rfc3339_ms(m.created_at_ms),
        "expires_at": format_rfc3339_ms(m.expires_at_ms),
        "target": m.target,
        "counts": {
            "targeted": m.targeted,
            "delivered": m.delivered,
            "acked": m.acked,
            "opened": m.opened,
            "expired": expired,
        }
    })))
}
