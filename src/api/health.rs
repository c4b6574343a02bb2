//! `/healthz` (the process answers) and `/readyz` (the store answers and we are not draining).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use serde_json::json;

use super::{AppState, Method, RouteTable};

pub fn routes(t: &mut RouteTable) {
    t.add(
        "/healthz",
        &[Method::GET],
        get(|| async { Json(json!({"status": "ok"})) }),
    );
    t.add("/readyz", &[Method::GET], get(ready));
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    match state.store.is_initialized() {
        Ok(true) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "initializing"})),
        ),
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed on the store");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "store_unavailable"})),
            )
        }
    }
}
