//! Owner endpoints: `GET /v1/admin/backup` streams a backup archive made while serving;
//! `GET /v1/admin/audit` lists who did what; [`audit`] records it.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::store::records::AuditRecord;

use super::extract::Admin;
use super::{ApiError, AppState, Method, RouteTable};

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/admin/backup", &[Method::GET], get(backup));
    t.add("/v1/admin/audit", &[Method::GET], get(audit_log));
}

/// Records a management action by an admin. Answers only after it is committed, so an
/// action the caller saw succeed is in the log.
pub async fn audit(
    state: &AppState,
    admin: &Admin,
    action: &str,
    app: Option<&str>,
    target: Option<&str>,
) -> Result<(), ApiError> {
    audit_as(state, &admin.actor, admin.peer, action, app, target).await
}

/// Records an action by an actor that is not (yet) a principal, e.g. a login attempt.
pub async fn audit_as(
    state: &AppState,
    actor: &str,
    peer: Option<std::net::SocketAddr>,
    action: &str,
    app: Option<&str>,
    target: Option<&str>,
) -> Result<(), ApiError> {
    let record = AuditRecord {
        at_ms: crate::domain::now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        app: app.map(str::to_owned),
        target: target.map(str::to_owned),
        peer: peer.map(|p| p.ip().to_string()),
    };
    state
        .store
        .record_audit(record)
        .await
        .map_err(ApiError::from)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<String>,
    limit: Option<usize>,
}

/// Audit entries, newest first. Owners see all; an admin sees the entries of its apps.
async fn audit_log(
    State(state): State<AppState>,
    admin: Admin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let before = q
        .before
        .as_deref()
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map_err(|e| ApiError::invalid(format!("before: not an RFC 3339 time ({e})")))
                .map(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries: Vec<_> = state
        .store
        .audit_log(before, limit)?
        .into_iter()
        .filter(|r| admin.apps.is_none() || r.app.as_deref().is_some_and(|a| admin.sees_app(a)))
        .map(|r| {
            json!({
                "at": crate::domain::format_rfc3339_ms(r.at_ms),
                "actor": r.actor,
                "action": r.action,
                "app": r.app,
                "target": r.target,
                "from": r.peer,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

async fn backup(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let data_dir = state.data_dir.clone();
    let made = tokio::task::spawn_blocking(move || {
        let tmp = tempfile::Builder::new()
            .prefix(".backup-")
            .suffix(".tar")
            .tempfile_in(&data_dir)
            .map_err(|e| crate::archive::ArchiveError::Io {
                path: data_dir.display().to_string(),
                source: e,
            })?;
        let manifest = crate::archive::create(&store, &data_dir, tmp.path())?;
        // Open it again, then let the name go: the open file streams, nothing stays on disk.
        let file =
            std::fs::File::open(tmp.path()).map_err(|e| crate::archive::ArchiveError::Io {
                path: tmp.path().display().to_string(),
                source: e,
            })?;
        Ok::<_, crate::archive::ArchiveError>((manifest, file))
    })
    .await
    .map_err(|_| ApiError::unavailable("the backup task failed"))?;
    let (manifest, file) = made.map_err(|e| {
        tracing::error!(error = %e, "backup failed");
        ApiError::unavailable("the backup could not be made; see the server log")
    })?;
    tracing::info!(by = %admin.actor, rows = manifest.rows, "backup streamed");
    audit(&state, &admin, "backup.download", None, None).await?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    let name = format!(
        "attachment; filename=\"warbler-backup-{}.tar\"",
        manifest.created_at.replace(':', "-")
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
