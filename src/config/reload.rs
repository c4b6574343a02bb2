//! Live reload of the configuration file: `notify` events on its directory (so editors that
//! save by rename are seen) or SIGHUP, debounced; the file is parsed and validated whole and
//! only then published through a `watch` channel (with the environment layer, fixed at
//! start, laid over it again). A bad, empty, truncated or unreadable file
//! is refused, logged and counted, and the running configuration stays. Settings that need a
//! restart keep their running values and are named in the log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Config, LogConfig};
use crate::metrics::{Metrics, ResultLabel};

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Called with the new log settings after a reload that changed them.
pub type LogHook = Box<dyn Fn(&LogConfig) + Send + Sync>;

/// Re-applies command-line overrides (`--data`, `--listen`) to a freshly read file.
pub type Overrides = Box<dyn Fn(&mut Config) + Send + Sync>;

/// Keeps the running values of settings that cannot change without a restart, and names
/// the ones the new file tried to change.
#[must_use]
pub fn merge_live(running: &Config, mut new: Config) -> (Config, Vec<&'static str>) {
    let mut ignored = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if new.$($field).+ != running.$($field).+ {
                ignored.push($name);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(server.listen, "server.listen");
    keep!(server.hostnames, "server.hostnames");
    keep!(server.data_dir, "server.data_dir");
    keep!(server.max_connections, "server.max_connections");
    keep!(
        server.max_connections_per_ip,
        "server.max_connections_per_ip"
    );
    keep!(storage, "storage");
    keep!(tls.mode, "tls.mode");
    keep!(tls.cert, "tls.cert");
    keep!(tls.key, "tls.key");
    keep!(gateway, "gateway");
    keep!(log.format, "log.format");
    (new, ignored)
}

/// Watches `path` and applies good changes to `tx` until shutdown.
pub struct Reloader {
    pub path: PathBuf,
    pub tx: watch::Sender<Arc<Config>>,
    pub metrics: Arc<Metrics>,
    pub on_log: Option<LogHook>,
    pub overrides: Overrides,
    /// The environment layer read at start, laid over every new file.
    pub env: super::EnvLayer,
}

impl Reloader {
    /// Reads, validates and publishes the file once. Returns whether it was applied.
    pub fn reload_now(&self) -> bool {
        let count = |result: &'static str| {
            self.metrics
                .config_reloads
                .get_or_create(&ResultLabel { result })
                .inc();
        };
        let new = match Config::load(Some(&self.path), &self.env) {
            Ok(mut c) => {
                (self.overrides)(&mut c);
                c
            }
            Err(e) => {
                count("error");
                tracing::error!(error = %e, "configuration change refused; the running configuration stays");
                return false;
            }
        };
        let running = self.tx.borrow().clone();
        if running.tls.mode == super::TlsMode::Off {
            super::warn_plaintext();
        }
        let (merged, ignored) = merge_live(&running, new);
        if !ignored.is_empty() {
            tracing::warn!(settings = ?ignored, "these settings need a restart; their running values stay until then");
        }
        if merged == *running {
            count("unchanged");
            return true;
        }
        if merged.log != running.log {
            if let Some(hook) = &self.on_log {
                hook(&merged.log);
            }
        }
        self.tx.send_replace(Arc::new(merged));
        count("ok");
        tracing::info!(path = %self.path.display(), "configuration reloaded");
        true
    }

    /// Runs until shutdown: file events (debounced) and SIGHUP both reload.
    pub async fn run(self, shutdown: CancellationToken) {
        let (events_tx, mut events) = mpsc::channel::<()>(16);
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        let name = self.path.file_name().map(std::ffi::OsStr::to_os_string);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = event.is_ok_and(|e| {
                e.paths
                    .iter()
                    .any(|p| p.file_name().map(std::ffi::OsStr::to_os_string) == name)
            });
            if relevant {
                // A full channel already holds a pending reload.
                let _ = events_tx.try_send(());
            }
        });
        let _watcher = match watcher
            .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), "cannot watch the configuration file; SIGHUP still reloads");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = events.recv() => {
                    // Let the editor finish: wait until the file has been quiet for a moment.
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(DEBOUNCE) => break,
                            Some(()) = events.recv() => {}
                        }
                    }
                    self.reload_now();
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    self.reload_now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_keep_their_running_values_and_are_named() {
        let running = Config::default();
        let mut new = Config::default();
        new.limits.pushes_per_second = 7;
        new.server.listen = "127.0.0.1:1".parse().expect("addr");
        new.log.level = "debug".into();
        let (merged, ignored) = merge_live(&running, new);
        assert_eq!(merged.limits.pushes_per_second, 7);
        assert_eq!(merged.log.level, "debug");
        assert_eq!(merged.server.listen, running.server.listen);
        assert_eq!(ignored, vec!["server.listen"]);
    }
}
