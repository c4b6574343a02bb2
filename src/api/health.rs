//! `/healthz` (the process answers), `/readyz` (the store answers and we are not draining)
//! and `/metrics` (Prometheus text exposition).

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
    t.add("/metrics", &[Method::GET], get(metrics));
}

async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let depth = i64::try_from(state.store.queue_depth()).unwrap_or(i64::MAX);
    state.metrics.writer_queue_depth.set(depth);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
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
