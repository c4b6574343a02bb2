//! `GET /v1/connect`: the WebSocket upgrade. A token in the `Authorization` header is
//! checked before upgrading (401/403 as JSON); otherwise the first frame must be `hello`.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;

use crate::gateway::protocol::MAX_CLIENT_FRAME;
use crate::gateway::ws;
use crate::gateway::{authenticate_device, DeviceAuthError};

use super::extract::bearer;
use super::{ApiError, AppState, Method, RouteTable};

pub fn routes(t: &mut RouteTable) {
    // GET upgrades over HTTP/1.1; CONNECT is WebSocket over HTTP/2 (RFC 8441).
    t.add(
        "/v1/connect",
        &[Method::GET, Method::CONNECT],
        get(connect).connect(connect),
    );
}

/// Bytes tungstenite reads at a time (and keeps allocated for the connection's life).
const READ_BUFFER: usize = 512;

async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade =
        upgrade.map_err(|e| ApiError::invalid(format!("expected a WebSocket upgrade: {e}")))?;
    let identity = match bearer(&headers) {
        None => None,
        Some(token) => match authenticate_device(&state.store, token) {
            Ok(id) => Some(id),
            Err(DeviceAuthError::Unauthenticated) => {
                return Err(ApiError::unauthenticated("the device token is invalid"))
            }
            Err(DeviceAuthError::Suspended) => {
                return Err(ApiError::forbidden("the app is suspended"))
            }
            Err(DeviceAuthError::Store(e)) => return Err(e.into()),
        },
    };
    let ctx = super::events::context(&state);
    if let Some(id) = &identity {
        super::events::check_room(&ctx, id)?;
    }
    Ok(upgrade
        // Small buffers: tungstenite's defaults cost ~135 KiB per idle connection. The read
        // buffer is allocated up front for the connection's life and grows only for a frame
        // that needs it; client frames are small (acks, opened, subscriptions).
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(8192)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| ws::run(socket, ctx, identity)))
}
