//! An app's pushes, devices and statistics through the management API (admin token or
//! console session, per the policy table): what the console's pages read and send.
//! `/v1/apps/{app}/messages…`, `/v1/apps/{app}/devices…`, `/v1/apps/{app}/stats`.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, patch};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::domain::{validate_device_id, validate_user, MessageInput};

use super::admin::audit;
use super::extract::{Admin, ApiJson, RawJson};
use super::stats::StatsQuery;
use super::{devices, messages, stats, ApiError, AppState, Method, RouteTable};

/// Most messages one recent-messages read returns.
pub const MAX_RECENT: usize = 200;

pub fn routes(t: &mut RouteTable) {
    t.add(
        "/v1/apps/{app}/messages",
        &[Method::GET, Method::POST],
        get(recent).post(send),
    );
    t.add(
        "/v1/apps/{app}/messages/{id}",
        &[Method::GET, Method::DELETE],
        get(status).delete(cancel),
    );
    t.add("/v1/apps/{app}/devices", &[Method::GET], get(find_devices));
    t.add(
        "/v1/apps/{app}/devices/{id}",
        &[Method::PATCH, Method::DELETE],
        patch(patch_device).delete(delete_device),
    );
    t.add("/v1/apps/{app}/stats", &[Method::GET], get(app_stats));
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn app_exists(state: &AppState, app: &str) -> Result<(), ApiError> {
    state
        .store
        .app(app)?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("app not found"))
}

async fn send(
    State(state): State<AppState>,
    admin: Admin,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: RawJson<MessageInput>,
) -> Result<Response, ApiError> {
    let response = messages::accept(&state, &app, &admin.actor, &headers, body).await?;
    audit(&state, &admin, "message.send", Some(&app), None).await?;
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentQuery {
    limit: Option<usize>,
}

/// The newest pushes with their funnel counts (and titles while their bodies are stored).
async fn recent(
    State(state): State<AppState>,
    _admin: Admin,
    Path(app): Path<String>,
    query: QueryResult<RecentQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    app_exists(&state, &app)?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_RECENT);
    let now = state.store.now_ms();
    let list: Vec<_> = state
        .store
        .recent_messages(&app, limit)?
        .iter()
        .map(|m| {
            let mut v = messages::status_view(&m.record, now);
            v["title"] = json!(m.title);
            v
        })
        .collect();
    Ok(Json(json!({ "messages": list })))
}

async fn status(
    State(state): State<AppState>,
    _admin: Admin,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = messages::find(&state, &app, &id)?;
    Ok(Json(messages::status_view(&m, state.store.now_ms())))
}

async fn cancel(
    State(state): State<AppState>,
    admin: Admin,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = messages::cancel_in(&state, &app, &id).await?;
    audit(&state, &admin, "message.cancel", Some(&app), Some(&id)).await?;
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceQuery {
    id: Option<String>,
    user: Option<String>,
}

/// Finds devices by id or by the user they are bound to.
async fn find_devices(
    State(state): State<AppState>,
    _admin: Admin,
    Path(app): Path<String>,
    query: QueryResult<DeviceQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    app_exists(&state, &app)?;
    let found = match (q.id, q.user) {
        (Some(id), None) => {
            if validate_device_id(&id).is_err() {
                Vec::new()
            } else {
                state.store.device(&app, &id)?.into_iter().collect()
            }
        }
        (None, Some(user)) => {
            validate_user(&user).map_err(|e| ApiError::invalid(format!("user: {}", e.0)))?;
            state.store.user_devices(&app, &user, 1000)?
        }
        _ => return Err(ApiError::invalid("name exactly one of id or user")),
    };
    let list: Vec<_> = found
        .iter()
        .map(|d| devices::device_view(&state, d))
        .collect();
    Ok(Json(json!({ "devices": list })))
}

async fn patch_device(
    State(state): State<AppState>,
    admin: Admin,
    Path((app, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<devices::Patch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = devices::patch_in(&state, &app, &id, body).await?;
    audit(&state, &admin, "device.update", Some(&app), Some(&id)).await?;
    Ok(Json(view))
}

async fn delete_device(
    State(state): State<AppState>,
    admin: Admin,
    Path((app, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let status = devices::delete_in(&state, &app, &id).await?;
    audit(&state, &admin, "device.delete", Some(&app), Some(&id)).await?;
    Ok(status)
}

async fn app_stats(
    State(state): State<AppState>,
    _admin: Admin,
    Path(app): Path<String>,
    query: QueryResult<StatsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    app_exists(&state, &app)?;
    stats::series(&state, &app, &q).map(Json)
}
