//! The HTTP API: `router(state)` with one file per resource, the contract's error shape
//! ([`error`]) and the extractors that authenticate and bound requests ([`extract`]).

pub(crate) mod admin;
mod app_data;
mod apps;
mod connect;
mod console_assets;
mod console_auth;
mod console_info;
mod devices;
pub mod error;
mod events;
mod extract;
mod health;
mod messages;
mod messages_batch;
pub use messages_batch::MAX_BATCH;
mod openapi;
pub mod policy;
mod principal;
pub mod rate_limit;
mod sdk;
pub mod session;
mod stats;
mod users;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
pub use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::{Registry, SessionSettings};
use crate::store::Store;

pub use apps::provision_app;
pub use error::ApiError;

/// Largest request body accepted, in bytes (a push to 1,000 users fits).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler can reach: one shared allocation. axum clones the state for every
/// request and every `State` extractor, so a clone is one reference count rather than one
/// per field (with a mutex in the shutdown token's and an allocation in the path's).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    #[must_use]
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub registry: Arc<Registry>,
    /// The running configuration; changes when the file is reloaded.
    pub config: tokio::sync::watch::Receiver<Arc<Config>>,
    pub sessions: SessionSettings,
    pub shutdown: CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    pub auth_throttle: Arc<rate_limit::AuthThrottle>,
    /// Console sessions and the per-login throttle.
    pub console: Arc<session::ConsoleSessions>,
    /// The data dir (backups are assembled there).
    pub data_dir: std::path::PathBuf,
    /// What every device connection shares (one allocation for all of them).
    pub gateway: Arc<crate::gateway::ws::WsContext>,
}

/// Every route with its methods, registered in one call each, so the list the OpenAPI test
/// checks is the router itself.
#[derive(Default)]
pub struct RouteTable {
    router: Router<AppState>,
    entries: Vec<(&'static str, &'static [Method])>,
}

impl RouteTable {
    /// Adds a route; `methods` must name exactly the methods `handler` serves (a test checks).
    pub fn add(
        &mut self,
        path: &'static str,
        methods: &'static [Method],
        handler: MethodRouter<AppState>,
    ) {
        self.router = std::mem::take(&mut self.router).route(path, handler);
        self.entries.push((path, methods));
    }

    fn build() -> Self {
        let mut t = Self::default();
        health::routes(&mut t);
        apps::routes(&mut t);
        admin::routes(&mut t);
        console_auth::routes(&mut t);
        users::routes(&mut t);
        console_info::routes(&mut t);
        app_data::routes(&mut t);
        messages::routes(&mut t);
        messages_batch::routes(&mut t);
        stats::routes(&mut t);
        devices::routes(&mut t);
        connect::routes(&mut t);
        events::routes(&mut t);
        openapi::routes(&mut t);
        sdk::routes(&mut t);
        console_assets::routes(&mut t);
        t
    }
}

/// Every (path, methods) the router serves, in registration order.
#[must_use]
pub fn route_list() -> Vec<(&'static str, &'static [Method])> {
    RouteTable::build().entries
}

/// The paths of device traffic (the WebSocket upgrade and the device endpoints over plain
/// HTTP), which [`crate::lanes`] keeps on the sessions' runtime.
#[must_use]
pub fn device_route_paths() -> Vec<&'static str> {
    let mut t = RouteTable::default();
    connect::routes(&mut t);
    events::routes(&mut t);
    t.entries.into_iter().map(|(path, _)| path).collect()
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    RouteTable::build()
        .router
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
