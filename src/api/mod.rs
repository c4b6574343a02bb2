//! The HTTP API: `router(state)` with one file per resource, the contract's error shape
//! ([`error`]) and the extractors that authenticate and bound requests ([`extract`]).

mod apps;
mod connect;
mod devices;
pub mod error;
mod extract;
mod health;
mod messages;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::{Registry, SessionSettings};
use crate::store::Store;

pub use apps::provision_app;
pub use error::ApiError;

/// Largest request body accepted, in bytes (a push to 1,000 users fits).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub sessions: SessionSettings,
    pub shutdown: CancellationToken,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(apps::routes())
        .merge(messages::routes())
        .merge(devices::routes())
        .merge(connect::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Rewrites error responses that did not come from [`ApiError`] (axum's own rejections: 405
/// with an empty body, undecodable path parameters as plain text, …) into the contract's
/// `{"error":{"code","message"}}`, keeping their status and `Allow` header.
async fn json_errors(response: axum::response::Response) -> axum::response::Response {
    use axum::http::header::{ALLOW, CONTENT_TYPE};
    use axum::response::IntoResponse;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = ApiError::from_status(status, message).into_response();
    if let Some(allow) = parts.headers.get(ALLOW) {
        out.headers_mut().insert(ALLOW, allow.clone());
    }
    out
}
