//! `warbler serve`: load the config (built-in defaults < file < `WARBLER_…` environment <
//! flags), build the app, print the address and any first-start credentials, serve until
//! SIGTERM/SIGINT, drain, exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::app::App;
use crate::config::reload::{LogHook, Overrides};
use crate::config::{Config, EnvLayer, LogFormat, TlsMode};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it the embedded default runs.
    #[arg(long, env = "WARBLER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store, TLS material). Default ./warbler-data.
    #[arg(long, env = "WARBLER_DATA")]
    pub data: Option<PathBuf>,
    /// Listening address, e.g. 0.0.0.0:8443. Default 127.0.0.1:8443.
    #[arg(long, env = "WARBLER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Allow `tls.mode = "off"`: serve plain, unencrypted HTTP (only behind a
    /// TLS-terminating proxy on a trusted link). Without this flag that mode is refused.
    #[arg(long)]
    pub insecure_plaintext: bool,
}

/// Why `serve` refuses `tls.mode = "off"` without the flag.
pub const PLAINTEXT_REFUSED: &str = "tls.mode = \"off\" serves plain, unencrypted HTTP: \
    tokens, keys and passwords would cross the network in clear text. Refusing to start; \
    pass --insecure-plaintext to allow it (only behind a TLS-terminating proxy), or set \
    tls.mode to \"auto\" or \"files\"";

fn load(args: &ServeArgs, env: &EnvLayer) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), env)?;
    if let Some(data) = &args.data {
        config.server.data_dir.clone_from(data);
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    config.validate()?;
    if config.tls.mode == TlsMode::Off && !args.insecure_plaintext {
        anyhow::bail!(PLAINTEXT_REFUSED);
    }
    Ok(config)
}

/// Starts logging; returns a hook that applies a reloaded `log.level` (none when
/// `WARBLER_LOG` fixes the filter).
fn init_logging(config: &Config) -> Option<LogHook> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let from_env = EnvFilter::try_from_env("WARBLER_LOG").ok();
    let fixed = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
        // Colours only on a terminal: a log file or the journal gets plain `key=value` text.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(
                        std::io::IsTerminal::is_terminal(&std::io::stderr())
                            && std::env::var_os("NO_COLOR").is_none(),
                    )
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    if fixed {
        return None;
    }
    Some(Box::new(move |log: &crate::config::LogConfig| {
        if let Ok(f) = EnvFilter::try_new(&log.level) {
            if handle.reload(f).is_ok() {
                tracing::info!(level = %log.level, "log level changed");
            }
        }
    }))
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = EnvLayer::from_process_env()
        .map_err(anyhow::Error::from)
        .and_then(|env| Ok((load(&args, &env)?, env)));
    let (config, env) = match loaded {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("warbler: {e:#}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let log_hook = init_logging(&config);
    for s in env.settings() {
        tracing::info!(variable = %s.var, key = %s.key, "configuration key set by the environment");
    }
    if !env.ignored.is_empty() {
        tracing::warn!(variables = ?env.ignored, "these WARBLER_ variables are not configuration keys nor known names; ignored (a typo?)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("warbler")
        .build()
        .context("cannot start the async runtime")?;
    let (data, listen) = (args.data.clone(), args.listen);
    let overrides: Overrides = Box::new(move |c: &mut Config| {
        if let Some(d) = &data {
            c.server.data_dir.clone_from(d);
        }
        if let Some(l) = listen {
            c.server.listen = l;
        }
    });
    runtime.block_on(serve(config, args.config.clone(), env, log_hook, overrides))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    env: EnvLayer,
    log_hook: Option<LogHook>,
    overrides: Overrides,
) -> anyhow::Result<()> {
    let has_config = config_path.is_some();
    let mut app = App::build(config).await.context("cannot start")?;
    app.use_environment(env);
    if let Some(path) = config_path {
        app.watch_config(path, log_hook, overrides);
    }
    if let Some(c) = app.initial_credentials() {
        println!(
            "First start: these credentials are shown once (also saved, mode 0600, in {}):",
            app.data_dir().join("initial-credentials.json").display()
        );
        println!("  admin user      {}", c.admin_user);
        println!("  admin password  {}", c.admin_password);
        println!("  admin token     {}", c.admin_token);
        println!("  app             {}", c.app);
        println!("  api key         {}", c.api_key);
        println!("  client key      {}", c.client_key);
        println!("  CA certificate  {}", c.ca_cert);
    }
    let scheme = if app.serves_tls() { "https" } else { "http" };
    println!("listening on {scheme}://{}", app.local_addr());
    let shutdown = app.shutdown_token();
    let watching = has_config;
    tokio::spawn(async move {
        wait_for_signal(watching).await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    });
    app.run().await;
    Ok(())
}

async fn wait_for_signal(watching: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    // SIGHUP (`systemctl reload`) must never stop the service: its default action would.
    // With a config file the reloader handles it too; without one there is nothing to reload.
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            Some(()) = async { hup.as_mut()?.recv().await } => {
                if !watching {
                    tracing::warn!("SIGHUP: the service runs without --config; nothing to reload");
                }
            }
        }
    }
}
