//! Device endpoints over plain HTTP, for clients that cannot keep a WebSocket: SSE
//! `GET /v1/events`, long-poll `GET /v1/poll`, and `POST /v1/ack`, `/v1/opened`,
//! `/v1/subscribe`, `/v1/unsubscribe`. Same auth, limits and semantics as WebSocket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::domain::MAX_BATCH_IDS;
use crate::gateway::client_ops::{self, ClientOpError};
use crate::gateway::protocol::ClientFrame;
use crate::gateway::ws::WsContext;
use crate::gateway::{poll, sse};

use super::extract::{ApiJson, Device};
use super::{ApiError, AppState, Method, RouteTable};

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/events", &[Method::GET], get(events));
    t.add("/v1/poll", &[Method::GET], get(long_poll));
    t.add("/v1/ack", &[Method::POST], post(ack));
    t.add("/v1/opened", &[Method::POST], post(opened));
    t.add("/v1/subscribe", &[Method::POST], post(subscribe));
    t.add("/v1/unsubscribe", &[Method::POST], post(unsubscribe));
}

pub(super) fn context(state: &AppState) -> Arc<WsContext> {
    Arc::clone(&state.gateway)
}

/// 429 when the device's app already holds its maximum of connections.
pub(super) fn check_room(
    ctx: &WsContext,
    id: &crate::gateway::DeviceIdentity,
) -> Result<(), ApiError> {
    match ctx.app_has_room(id)? {
        Ok(()) => Ok(()),
        Err(limit) => Err(ApiError::rate_limited(
            format!("this app holds its maximum of {limit} connections"),
            5,
        )),
    }
}

async fn events(
    State(state): State<AppState>,
    Device(id): Device,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID: must be a message seq"))?,
        ),
    };
    let ctx = context(&state);
    check_room(&ctx, &id)?;
    let body = Body::from_stream(sse::open(ctx, id, last_event_id));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[derive(Deserialize)]
struct PollQuery {
    wait: Option<u64>,
    after: Option<u64>,
    #[allow(dead_code)] // Read by the `Device` extractor; named here so it is not unknown.
    token: Option<String>,
}

async fn long_poll(
    State(state): State<AppState>,
    Device(id): Device,
    query: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let wait = q.wait.unwrap_or(30);
    if wait > poll::MAX_WAIT.as_secs() {
        return Err(ApiError::invalid(format!(
            "wait: at most {} seconds",
            poll::MAX_WAIT.as_secs()
        )));
    }
    let ctx = context(&state);
    check_room(&ctx, &id)?;
    let body = poll::poll(ctx, id, Duration::from_secs(wait), q.after).await?;
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ids {
    ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Topics {
    topics: Vec<String>,
}

fn bounded(ids: &[String]) -> Result<(), ApiError> {
    if ids.len() > MAX_BATCH_IDS {
        return Err(ApiError::invalid(format!("ids: at most {MAX_BATCH_IDS}")));
    }
    Ok(())
}

async fn ack(
    State(state): State<AppState>,
    Device(id): Device,
    ApiJson(body): ApiJson<Ids>,
) -> Result<Json<serde_json::Value>, ApiError> {
    bounded(&body.ids)?;
    let n = state.store.ack(&id.app, &id.device, body.ids).await?;
    Ok(Json(json!({ "acked": n })))
}

async fn apply(
    state: &AppState,
    id: &crate::gateway::DeviceIdentity,
    frame: ClientFrame,
) -> Result<StatusCode, ApiError> {
    match client_ops::apply(&state.store, id, frame).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ClientOpError::Forbidden(m)) => Err(ApiError::forbidden(m)),
        Err(ClientOpError::Invalid(m)) => Err(ApiError::invalid(m)),
        Err(ClientOpError::Store(e)) => Err(e.into()),
    }
}

async fn opened(
    State(state): State<AppState>,
    Device(id): Device,
    ApiJson(body): ApiJson<Ids>,
) -> Result<StatusCode, ApiError> {
    bounded(&body.ids)?;
    apply(
        &state,
        &id,
        ClientFrame::Opened {
            ids: body.ids.into(),
        },
    )
    .await
}

async fn subscribe(
    State(state): State<AppState>,
    Device(id): Device,
    ApiJson(body): ApiJson<Topics>,
) -> Result<StatusCode, ApiError> {
    apply(
        &state,
        &id,
        ClientFrame::Subscribe {
            topics: body.topics,
        },
    )
    .await
}

async fn unsubscribe(
    State(state): State<AppState>,
    Device(id): Device,
    ApiJson(body): ApiJson<Topics>,
) -> Result<StatusCode, ApiError> {
    apply(
        &state,
        &id,
        ClientFrame::Unsubscribe {
            topics: body.topics,
        },
    )
    .await
}
