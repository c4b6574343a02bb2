//! Live certificate swap in `files` mode: the certificate and key files are watched (through
//! their directories, so renames are seen); after a quiet moment the pair is loaded and
//! checked, and only a good pair replaces the served one. A bad pair (unreadable, not PEM,
//! key not matching) is logged and counted, and the running certificate stays. New
//! connections get the new certificate; open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, ResultLabel};

/// Quiet time after the last file event before loading the pair.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

fn dir_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Watches `cert` and `key` and publishes each good new pair on `tx` until shutdown.
pub async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    tx: watch::Sender<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let (events_tx, mut events) = mpsc::channel::<()>(16);
    let names: Vec<_> = [&cert, &key]
        .iter()
        .filter_map(|p| p.file_name().map(std::ffi::OsStr::to_os_string))
        .collect();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = event.is_ok_and(|e| {
            e.paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
        });
        if relevant {
            let _ = events_tx.try_send(());
        }
    });
    let mut dirs = vec![dir_of(&cert), dir_of(&key)];
    dirs.dedup();
    let _watcher = match watcher {
        Ok(mut w) => {
            for d in &dirs {
                if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                    tracing::error!(error = %e, dir = %d.display(), "cannot watch the certificate files; a restart picks up new ones");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the certificate files; a restart picks up new ones");
            None
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(()) = events.recv() => {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(DEBOUNCE) => break,
                        Some(()) = events.recv() => {}
                    }
                }
                let count = |result: &'static str| {
                    metrics.tls_reloads.get_or_create(&ResultLabel { result }).inc();
                };
                match super::server_config(&cert, &key) {
                    Ok(config) => {
                        tx.send_replace(config);
                        count("ok");
                        tracing::info!(cert = %cert.display(), "TLS certificate replaced; new connections use it");
                    }
                    Err(e) => {
                        count("error");
                        tracing::error!(error = %e, "new TLS certificate files refused; the running certificate stays");
                    }
                }
            }
        }
    }
}
