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
mod stats;

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
        .merge(stats::routes())
        .merge(devices::routes())
        .merge(connect::routes())
        .merge(events::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
