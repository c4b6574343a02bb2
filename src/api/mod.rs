//! The HTTP API: `router(state)` with one file per resource, the contract's error shape
//! ([`error`]) and the extractors that authenticate and bound requests ([`extract`]).

mod apps;
mod connect;
mod devices;
pub mod error;
mod events;
mod extract;
mod health;
mod messages;
mod openapi;
mod stats;

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

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub sessions: SessionSettings,
    pub shutdown: CancellationToken,
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
        messages::routes(&mut t);
        stats::routes(&mut t);
        devices::routes(&mut t);
        connect::routes(&mut t);
        events::routes(&mut t);
        openapi::routes(&mut t);
        t
    }
}

/// Every (path, methods) the router serves, in registration order.
#[must_use]
pub fn route_list() -> Vec<(&'static str, &'static [Method])> {
    RouteTable::build().entries
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    RouteTable::build()
        .router
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
