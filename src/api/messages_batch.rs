//! `POST /v1/messages/batch` (scope push): up to [`MAX_BATCH`] pushes in one request, each
//! with its own target and payload — the bulk send a backend makes when every user gets a
//! message of their own — stored in one group commit.
//!
//! The batch is checked whole before anything is stored: a malformed item, an item over a
//! limit, or a batch over the app's rate is refused with one error naming the item, and
//! nothing is sent. Once checked, each push is stored on its own: the answer lists, in
//! order, the `{"id","recipients"}` of each stored push or the `{"error":{…}}` of one the
//! store refused (an unknown single device).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::domain::{now_ms, MessageInput};
use crate::store::records::Scope;

use super::extract::{parse_json, ApiKey, BodyBytes};
use super::messages::{idempotency, prepare, push_settings, reply_body, take_tokens};
use super::{ApiError, AppState, Method, RouteTable};

/// Most pushes in one batch (the request body is bounded too: `MAX_BODY_BYTES`).
pub const MAX_BATCH: usize = 500;

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/messages/batch", &[Method::POST], post(send_batch));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchInput<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// Names the item an error is about.
fn at_item(i: usize, e: ApiError) -> ApiError {
    ApiError {
        message: format!("messages[{i}]: {}", e.message),
        ..e
    }
}

async fn send_batch(
    State(state): State<AppState>,
    key: ApiKey,
    headers: HeaderMap,
    BodyBytes(body): BodyBytes,
) -> Result<axum::response::Response, ApiError> {
    key.require(Scope::Push)?;
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::invalid(
            "Idempotency-Key: a batch has none of its own; give each message its idempotency_key",
        ));
    }
    // serde would also read a struct from an array; say plainly what the body must be.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid(
            r#"invalid JSON body: expected an object {"messages": [...]}"#,
        ));
    }
    let batch: BatchInput = parse_json(&body)?;
    let n = batch.messages.len();
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "messages: 1 to {MAX_BATCH} pushes per batch (got {n})"
        )));
    }
    let (app, config, rate) = push_settings(&state, &key.app)?;
    let no_headers = HeaderMap::new();
    let now = now_ms();
    let mut ops = Vec::with_capacity(n);
    for (i, raw) in batch.messages.iter().enumerate() {
        let bytes = raw.get().as_bytes();
        let input: MessageInput = parse_json(bytes).map_err(|e| at_item(i, e))?;
        let idem = idempotency(&no_headers, &input, bytes).map_err(|e| at_item(i, e))?;
        let op = prepare(&app, &config.limits, input, idem, now).map_err(|e| at_item(i, e))?;
        ops.push(op);
    }
    let count = u32::try_from(n).unwrap_or(u32::MAX);
    if count > rate {
        return Err(ApiError::rate_limited(
            format!("this app may push {rate} messages per second; a batch of {n} is more"),
            1,
        ));
    }
    take_tokens(&state, &key.app, rate, count)?;
    let replies = state.store.push_many(ops).await;
    let mut accepted = 0usize;
    let mut results = Vec::with_capacity(n);
    let mut unavailable = None;
    for reply in replies {
        match reply {
            Ok(reply) => {
                accepted += 1;
                results.push(reply_body(&reply));
            }
            Err(e) => {
                let e = ApiError::from_store(e, "device");
                if e.status.is_server_error() {
                    unavailable.get_or_insert_with(|| e.clone());
                }
                results.push(json!({"error": {"code": e.code, "message": e.message}}));
            }
        }
    }
    // A failed commit stored none of its pushes: with nothing stored, say so as the answer.
    if let (0, Some(e)) = (accepted, unavailable) {
        return Err(e);
    }
    tracing::debug!(app = %key.app, by = %key.key_id, pushes = n, accepted, "batch accepted");
    let body = json!({"accepted": accepted, "results": results});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
