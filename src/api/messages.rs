//! Server API for messages (API key): `POST /v1/messages` (with TTL, collapse key, send
//! time and idempotency), `GET|DELETE /v1/messages/{id}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;

use crate::auth::sha256_hex;
use crate::domain::{
    format_rfc3339_ms, now_ms, time_ordered_id, validate_message_id, MessageInput,
};
use crate::store::records::{AppRecord, Lifecycle, MessageRecord, Scope};
use crate::store::{Idempotency, PushOp, PushReply};

use super::extract::{ApiKey, RawJson};
use super::{ApiError, AppState, Method, RouteTable};

/// Longest collapse or idempotency key.
pub const MAX_KEY_BYTES: usize = 128;
/// Furthest ahead a push may be scheduled.
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 366 * 24 * 3600 * 1000;

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/messages", &[Method::POST], post(send));
    t.add(
        "/v1/messages/{id}",
        &[Method::GET, Method::DELETE],
        get(status).delete(cancel),
    );
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

fn check_key(field: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field}: 1-{MAX_KEY_BYTES} bytes, no control characters"
        )));
    }
    Ok(())
}

fn parse_send_at(value: &str, now: u64) -> Result<u64, ApiError> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::invalid(format!("send_at: not an RFC 3339 time ({e})")))?;
    let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    if ms > now.saturating_add(MAX_SCHEDULE_AHEAD_MS) {
        return Err(ApiError::invalid("send_at: at most 366 days ahead"));
    }
    Ok(ms)
}

/// The idempotency key from the body or the `Idempotency-Key` header (not both, unless equal),
/// with the hash of the request it identifies: the body as parsed, without the key itself.
pub(super) fn idempotency(
    headers: &HeaderMap,
    input: &MessageInput,
    bytes: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let header = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("Idempotency-Key: must be visible ASCII"))
        })
        .transpose()?;
    let key = match (header, &input.idempotency_key) {
        (Some(h), Some(b)) if &h != b => {
            return Err(ApiError::invalid(
                "idempotency_key: differs from the Idempotency-Key header",
            ))
        }
        (Some(h), _) => h,
        (None, Some(b)) => b.clone(),
        (None, None) => return Ok(None),
    };
    check_key("idempotency_key", &key)?;
    let mut canonical: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    if let Some(obj) = canonical.as_object_mut() {
        obj.remove("idempotency_key");
    }
    Ok(Some(Idempotency {
        key,
        request_sha256: sha256_hex(&canonical.to_string()),
    }))
}

async fn send(
    State(state): State<AppState>,
    key: ApiKey,
    headers: HeaderMap,
    body: RawJson<MessageInput>,
) -> Result<axum::response::Response, ApiError> {
    key.require(Scope::Push)?;
    accept(&state, &key.app, &key.key_id, &headers, body).await
}

/// Checks and stores one push for `app` on behalf of `actor` (an API key or a console
/// principal): limits, rate, TTL, schedule, idempotency.
pub(super) async fn accept(
    state: &AppState,
    app_name: &str,
    actor: &str,
    headers: &HeaderMap,
    body: RawJson<MessageInput>,
) -> Result<axum::response::Response, ApiError> {
    let RawJson {
        value: input,
        bytes,
    } = body;
    let idempotency = idempotency(headers, &input, &bytes)?;
    let (app, config, rate) = push_settings(state, app_name)?;
    take_tokens(state, app_name, rate, 1)?;
    let op = prepare(&app, &config.limits, input, idempotency, now_ms())?;
    let reply = state
        .store
        .push(op)
        .await
        .map_err(|e| ApiError::from_store(e, "device"))?;
    tracing::debug!(app = %app_name, by = %actor, message = %reply.id,
        recipients = ?reply.recipients, replayed = reply.replayed, "push accepted");
    Ok((StatusCode::ACCEPTED, Json(reply_body(&reply))).into_response())
}

/// The 202 answer's body for one stored push.
pub(super) fn reply_body(reply: &PushReply) -> serde_json::Value {
    let mut body = json!({"id": reply.id, "recipients": reply.recipients});
    if let Some(at) = reply.scheduled_at_ms {
        body["send_at"] = json!(format_rfc3339_ms(at));
    }
    body
}

/// The app a push is for, the running configuration, and the app's pushes per second.
pub(super) fn push_settings(
    state: &AppState,
    app_name: &str,
) -> Result<(AppRecord, std::sync::Arc<crate::config::Config>, u32), ApiError> {
    let app = state
        .store
        .app(app_name)?
        .ok_or_else(|| ApiError::not_found("app not found"))?;
    let config = state.config.borrow().clone();
    let rate = app
        .limits
        .pushes_per_second
        .unwrap_or(config.limits.pushes_per_second);
    Ok((app, config, rate))
}

/// Takes `n` pushes from the app's rate budget, or answers 429.
pub(super) fn take_tokens(
    state: &AppState,
    app_name: &str,
    rate: u32,
    n: u32,
) -> Result<(), ApiError> {
    if let Err(retry_after) = state.rate_limiter.take_n(app_name, rate, n) {
        crate::metrics::Metrics::app(&state.metrics.rate_limited, app_name).inc();
        return Err(ApiError::rate_limited(
            format!("this app may push {rate} messages per second; retry later"),
            retry_after,
        ));
    }
    Ok(())
}

/// Checks one push against the app's limits (size, TTL, schedule, target) and builds the
/// store operation; the rate limit is the caller's.
pub(super) fn prepare(
    app: &AppRecord,
    limits: &crate::config::LimitsConfig,
    input: MessageInput,
    idempotency: Option<Idempotency>,
    now: u64,
) -> Result<PushOp, ApiError> {
    if input.notification.is_none() && input.data.is_none() {
        return Err(ApiError::invalid(
            "a message needs notification, data or both",
        ));
    }
    if let Some(k) = &input.collapse_key {
        check_key("collapse_key", k)?;
    }
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
    let send_at_ms = input
        .send_at
        .as_deref()
        .map(|s| parse_send_at(s, now))
        .transpose()?;
    if send_at_ms.is_some_and(|at| at > now) && ttl == 0 {
        return Err(ApiError::invalid(
            "ttl: 0 means \"only to devices connected now\" and cannot be scheduled",
        ));
    }
    let target = input
        .to
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(PushOp {
        app: app.name.clone(),
        id: time_ordered_id("msg"),
        target,
        notification: input.notification,
        data: input.data,
        priority: input.priority.unwrap_or_default(),
        created_at_ms: now,
        ttl_secs: ttl,
        collapse_key: input.collapse_key,
        send_at_ms,
        idempotency,
        mailbox_cap: app.limits.mailbox_cap.unwrap_or(limits.mailbox_cap),
    })
}

/// The state of a push as one word, from its lifecycle and counts.
fn message_state(m: &MessageRecord, now: u64) -> &'static str {
    match m.lifecycle {
        Lifecycle::Scheduled => return "scheduled",
        Lifecycle::Cancelled => return "cancelled",
        Lifecycle::Accepted => {}
    }
    if m.targeted == 0 {
        "no_recipients"
    } else if m.acked >= m.targeted {
        "acked"
    } else if m.live_only {
        if m.delivered >= m.targeted {
            "delivered"
        } else {
            "sent_live"
        }
    } else if m.expires_at_ms <= now {
        "expired"
    } else if m.topic.is_none() && m.pending == 0 {
        "done"
    } else if m.delivered >= m.targeted {
        "delivered"
    } else {
        "pending"
    }
}

pub(super) fn find(state: &AppState, app: &str, id: &str) -> Result<MessageRecord, ApiError> {
    let not_found = || ApiError::not_found("message not found");
    validate_message_id(id).map_err(|_| not_found())?;
    state.store.message(app, id)?.ok_or_else(not_found)
}

async fn status(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    key.require(Scope::Read)?;
    let m = find(&state, &key.app, &id)?;
    Ok(Json(status_view(&m, state.store.now_ms())))
}

/// A message's state and counts, as `GET /v1/messages/{id}` answers.
pub(super) fn status_view(m: &MessageRecord, now: u64) -> serde_json::Value {
    let mut body = json!({
        "id": m.id,
        "state": message_state(m, now),
        "created_at": format_rfc3339_ms(m.created_at_ms),
        "expires_at": format_rfc3339_ms(m.expires_at_ms),
        "target": m.target,
        "counts": {
            "targeted": m.targeted,
            "delivered": m.delivered,
            "acked": m.acked,
            "opened": m.opened,
            "expired": m.expired,
            "replaced": m.replaced,
            "dropped": m.dropped,
            "cancelled": m.cancelled,
        }
    });
    if let Some(at) = m.send_at_ms {
        body["send_at"] = json!(format_rfc3339_ms(at));
    }
    if let Some(k) = &m.collapse_key {
        body["collapse_key"] = json!(k);
    }
    body
}

async fn cancel(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    key.require(Scope::Push)?;
    cancel_in(&state, &key.app, &id).await.map(Json)
}

/// Cancels what of a message of `app` is not yet delivered.
pub(super) async fn cancel_in(
    state: &AppState,
    app: &str,
    id: &str,
) -> Result<serde_json::Value, ApiError> {
    find(state, app, id)?;
    let c = state
        .store
        .cancel(app, id)
        .await
        .map_err(|e| ApiError::from_store(e, "message"))?;
    tracing::info!(app = %app, message = %id, scheduled = c.scheduled, pending = c.pending, topic = c.topic, "message cancelled");
    Ok(json!({
        "id": id,
        "cancelled": {"scheduled": c.scheduled, "pending": c.pending, "topic": c.topic},
    }))
}
