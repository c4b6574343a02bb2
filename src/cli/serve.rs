//! `warbler serve`: load the config (file, then flags), build the app, print the address
//! and any first-start credentials, serve until SIGTERM/SIGINT, drain, exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::app::App;
use crate::config::{Config, LogFormat};

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
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(data) = &args.data {
        config.server.data_dir.clone_from(data);
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARBLER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warbler: {e:#}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("warbler")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await.context("cannot start")?;
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
    println!("listening on https://{}", app.local_addr());
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    });
    app.run().await;
    Ok(())
}

async fn wait_for_signal() {
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
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            Some(()) = async { hup.as_mut()?.recv().await } => {
                tracing::warn!("SIGHUP: configuration reload is not built yet; restart to apply changes");
            }
        }
    }
}
