//! `GET /v1/connect`: the WebSocket upgrade (HTTP/1.1 `Upgrade`, or RFC 8441 extended
//! CONNECT over HTTP/2). A token in the `Authorization` header is checked before upgrading
//! (401/403 as JSON); otherwise the first frame must be `hello`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::gateway::{authenticate_device, wire, ws, DeviceAuthError};

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

/// Whether a comma-separated header holds `token` (case-insensitive).
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the upgrade request; returns the `Sec-WebSocket-Accept` value for HTTP/1.1.
fn check_upgrade(req: &Request) -> Result<Option<HeaderValue>, ApiError> {
    let bad = |why: &str| ApiError::invalid(format!("expected a WebSocket upgrade: {why}"));
    let headers = req.headers();
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if req.version() >= Version::HTTP_2 {
        let protocol = req.extensions().get::<hyper::ext::Protocol>();
        if req.method() != HttpMethod::CONNECT
            || !protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
        {
            return Err(bad("HTTP/2 needs CONNECT with :protocol websocket"));
        }
        if !version_ok {
            return Err(bad("Sec-WebSocket-Version must be 13"));
        }
        return Ok(None);
    }
    if req.method() != HttpMethod::GET {
        return Err(bad("the method must be GET"));
    }
    if !header_has(headers, header::CONNECTION, "upgrade")
        || !header_has(headers, header::UPGRADE, "websocket")
    {
        return Err(bad(
            "Connection: upgrade and Upgrade: websocket are required",
        ));
    }
    if !version_ok {
        return Err(bad("Sec-WebSocket-Version must be 13"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(bad("Sec-WebSocket-Key is missing"));
    };
    let accept = HeaderValue::from_str(&wire::accept_key(key.as_bytes()))
        .map_err(|_| bad("Sec-WebSocket-Key is malformed"))?;
    Ok(Some(accept))
}

async fn connect(State(state): State<AppState>, mut req: Request) -> Result<Response, ApiError> {
    let accept = check_upgrade(&req)?;
    let identity = match bearer(req.headers()) {
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
    let upgrade = hyper::upgrade::on(&mut req);
    let runtime = ctx.runtime.clone();
    drop(runtime.spawn(ws::run(upgrade, ctx, identity.map(Box::new))));
    Ok(match accept {
        Some(accept) => (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::SEC_WEBSOCKET_ACCEPT, accept),
            ],
        )
            .into_response(),
        None => StatusCode::OK.into_response(),
    })
}
