//! The composition root. `App::build` checks the data dir, bootstraps TLS, opens the store,
//! performs the first start and binds the port, spawning nothing; `App::run` serves until
//! the shutdown token is cancelled, then drains in a fixed, logged order.

mod first_start;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{router, AppState, Shared};
use crate::config::reload::{LogHook, Overrides, Reloader};
use crate::config::{Config, EnvLayer, StorageDurability, TlsMode};
use crate::gateway::{Registry, SessionSettings};
use crate::metrics::Metrics;
use crate::store::{Durability, Store, StoreError, WriterConfig};
use crate::tls::renew::{count_renewal, renew_if_due};
use crate::tls::{ensure_bootstrap, server_config, TlsError, TlsPaths};

pub use first_start::{FirstStartError, InitialCredentials};

/// How long shutdown waits for open connections before giving up on them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot prepare the data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    FirstStart(#[from] FirstStartError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built, not yet running, service.
pub struct App {
    config: Arc<Config>,
    config_tx: tokio::sync::watch::Sender<Arc<Config>>,
    /// The file to watch for live changes, and the hook that applies log settings.
    watch: Option<(PathBuf, Option<LogHook>, Overrides)>,
    /// `WARBLER_…` configuration read at start, re-applied over each reloaded file.
    env: EnvLayer,
    data_dir: PathBuf,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The served certificate; `None` in `tls.mode = "off"` (plain HTTP).
    tls: Option<tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>>,
    /// In `files` mode, the certificate and key to watch.
    tls_files: Option<(PathBuf, PathBuf)>,
    /// In `auto` mode, the TLS dir and the names its server certificate must cover.
    tls_auto: Option<(PathBuf, Vec<String>)>,
    /// How often `auto` mode checks whether its server certificate needs renewing.
    renew_every: Duration,
    store: Store,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    initial: Option<InitialCredentials>,
}

impl App {
    /// Prepares everything the service needs and binds its port.
    ///
    /// # Errors
    /// When the data dir, TLS material, store or port cannot be set up.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let data_dir = config.server.data_dir.clone();
        crate::fsutil::ensure_private_dir(&data_dir).map_err(|source| AppError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        tracing::info!(data = %data_dir.display(), "data dir ready");

        let metrics = Arc::new(Metrics::new());
        let mut tls_files = None;
        let mut tls_auto = None;
        let tls = match config.tls.mode {
            TlsMode::Auto => {
                let dir = data_dir.join("tls");
                let outcome = ensure_bootstrap(&dir, &config.server.hostnames)?;
                if outcome.created_ca {
                    tracing::info!(path = %dir.join("ca.crt").display(), "created a new local CA");
                }
                if let Some(reason) = renew_if_due(&dir, &config.server.hostnames)? {
                    count_renewal(&metrics, reason.label());
                }
                let paths = TlsPaths::in_dir(&dir);
                let loaded = server_config(&paths.server_cert, &paths.server_key)?;
                tls_auto = Some((dir, config.server.hostnames.clone()));
                Some(loaded)
            }
            TlsMode::Files => {
                // validate() guarantees both paths in files mode.
                let cert = config.tls.cert.clone().unwrap_or_default();
                let key = config.tls.key.clone().unwrap_or_default();
                let loaded = server_config(&cert, &key)?;
                tls_files = Some((cert, key));
                Some(loaded)
            }
            TlsMode::Off => {
                crate::config::warn_plaintext();
                None
            }
        };

        let registry = Registry::counting_overflows(metrics.session_outbox_overflows.clone());
        metrics.tls_enabled.set(i64::from(tls.is_some()));
        let writer = WriterConfig {
            metrics: Some(Arc::clone(&metrics)),
            durability: match config.storage.durability {
                StorageDurability::Immediate => Durability::Immediate,
                StorageDurability::Relaxed => Durability::Relaxed,
            },
            cache_bytes: usize::try_from(config.storage.cache_mib.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            journal: config.storage.journal,
            checkpoint_every: Duration::from_millis(config.storage.checkpoint_ms),
            ..WriterConfig::default()
        };
        let store = Store::open(&data_dir.join("warbler.redb"), writer, registry.clone())?;
        tracing::info!("store open");

        let initial = if store.is_initialized()? {
            None
        } else {
            Some(first_start::run(&store, &data_dir).await?)
        };

        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| AppError::Bind { addr, source })?;
        Ok(Self {
            config_tx: tokio::sync::watch::Sender::new(Arc::new(config.clone())),
            watch: None,
            env: EnvLayer::default(),
            config: Arc::new(config),
            data_dir,
            listener,
            local_addr,
            tls: tls.map(tokio::sync::watch::Sender::new),
            tls_files,
            tls_auto,
            renew_every: crate::tls::renew::CHECK_EVERY,
            store,
            registry,
            metrics,
            shutdown: CancellationToken::new(),
            initial,
        })
    }

    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the port serves TLS (`false` only in `tls.mode = "off"`).
    #[must_use]
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    #[must_use]
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The credentials created by this start, if it was the first one.
    #[must_use]
    pub fn initial_credentials(&self) -> Option<&InitialCredentials> {
        self.initial.as_ref()
    }

    /// Reload the configuration from `path` when it changes or on SIGHUP, while running.
    /// `overrides` re-applies command-line settings to each newly read file.
    pub fn watch_config(&mut self, path: PathBuf, on_log: Option<LogHook>, overrides: Overrides) {
        self.watch = Some((path, on_log, overrides));
    }

    /// Check the bootstrapped certificate this often instead of every 12 hours (tests).
    pub fn check_renewal_every(&mut self, every: Duration) {
        self.renew_every = every;
    }

    /// Re-apply this environment layer (read at process start) over every reloaded file.
    pub fn use_environment(&mut self, env: EnvLayer) {
        self.env = env;
    }

    /// The configuration as it is now (after any reloads).
    #[must_use]
    pub fn config(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.config_tx.subscribe()
    }

    /// Cancel this to shut the service down.
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains: stop accepting, close
    /// sessions (going away), finish open requests, then commit and stop the store writer.
    pub async fn run(self) {
        let g = &self.config.gateway;
        let sessions = SessionSettings {
            heartbeat: Duration::from_secs(g.heartbeat_secs),
            outbox_capacity: g.outbox_capacity,
            write_timeout: Duration::from_secs(g.write_timeout_secs),
            hello_timeout: Duration::from_secs(g.hello_timeout_secs),
            max_batch: 256,
        };
        let state = AppState::new(Shared {
            store: self.store.clone(),
            registry: self.registry.clone(),
            config: self.config_tx.subscribe(),
            sessions,
            shutdown: self.shutdown.clone(),
            metrics: Arc::clone(&self.metrics),
            rate_limiter: Arc::default(),
            auth_throttle: Arc::default(),
            console: Arc::default(),
            data_dir: self.data_dir.clone(),
            gateway: Arc::new(crate::gateway::ws::WsContext {
                store: self.store.clone(),
                registry: self.registry.clone(),
                settings: sessions,
                shutdown: self.shutdown.clone(),
                metrics: Arc::clone(&self.metrics),
                config: self.config_tx.subscribe(),
                runtime: tokio::runtime::Handle::current(),
            }),
        });
        let tracker = TaskTracker::new();
        // Live sessions learn of the shutdown from the registry, like any other close.
        tracker.spawn(self.registry.clone().run_ticker(self.shutdown.clone()));
        let (registry, shutdown) = (self.registry.clone(), self.shutdown.clone());
        tracker.spawn(async move {
            shutdown.cancelled().await;
            registry.close_all(crate::gateway::registry::CloseReason::ServerStopping);
        });
        if let (Some((cert, key)), Some(tls)) = (self.tls_files, &self.tls) {
            tracker.spawn(crate::tls::reload::watch_files(
                cert,
                key,
                tls.clone(),
                Arc::clone(&self.metrics),
                self.shutdown.clone(),
            ));
        }
        if let (Some((dir, hostnames)), Some(tls)) = (self.tls_auto, &self.tls) {
            tracker.spawn(crate::tls::renew::renew_periodically(
                dir,
                hostnames,
                self.renew_every,
                tls.clone(),
                Arc::clone(&self.metrics),
                self.shutdown.clone(),
            ));
        }
        if let Some((path, on_log, overrides)) = self.watch {
            let reloader = Reloader {
                path,
                tx: self.config_tx.clone(),
                metrics: Arc::clone(&self.metrics),
                on_log,
                overrides,
                env: self.env,
            };
            tracker.spawn(reloader.run(self.shutdown.clone()));
        }
        tracker.spawn(sweeper(
            self.store.clone(),
            Duration::from_millis(self.config.storage.sweep_interval_ms),
            self.shutdown.clone(),
        ));
        if self.tls.is_some() {
            tracing::info!(addr = %self.local_addr, "serving https");
        } else {
            tracing::warn!(addr = %self.local_addr, "serving PLAIN HTTP (tls.mode = \"off\"): no encryption");
        }
        // API connections get a runtime of their own (see `lanes`); without one, every
        // connection is served here, as before.
        let api = match crate::lanes::ApiRuntime::start() {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the API runtime; serving the API on the sessions' runtime");
                None
            }
        };
        crate::server::serve(
            self.listener,
            self.tls.as_ref().map(tokio::sync::watch::Sender::subscribe),
            router(state),
            crate::server::ConnLimits {
                total: self.config.server.max_connections,
                per_ip: self.config.server.max_connections_per_ip,
            },
            Arc::clone(&self.metrics),
            self.shutdown.clone(),
            tracker.clone(),
            api.as_ref().and_then(crate::lanes::ApiRuntime::handle),
        )
        .await;
        tracker.close();
        tracing::info!(open = tracker.len(), "draining connections");
        if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                "drain deadline passed; closing the rest"
            );
        }
        drop(api);
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("store closed; bye");
    }
}

/// Runs the store's sweep on a timer (expiry, due schedules, idempotency keys), at once
/// again while a sweep reports more work, until shutdown.
async fn sweeper(store: Store, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        loop {
            match store.sweep().await {
                Ok(report) => {
                    if report.expired + report.released > 0 {
                        tracing::debug!(
                            expired = report.expired,
                            released = report.released,
                            "sweep"
                        );
                    }
                    if !report.more || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "sweep failed");
                    break;
                }
            }
        }
    }
}
