//! Owner endpoints: `GET /v1/admin/backup` streams a backup archive made while serving.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::extract::Admin;
use super::{ApiError, AppState, Method, RouteTable};

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/admin/backup", &[Method::GET], get(backup));
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
    tracing::info!(by = %admin.token_id, rows = manifest.rows, "backup streamed");
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
