//! `warbler health`: ask a running server's `/readyz` (exit 0 when ready, 1 otherwise), so
//! container health checks and install scripts need no curl.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hyper::{Method, StatusCode};

use crate::client::Client;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Server base URL.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// CA certificate (PEM) to trust. Default DATA/tls/ca.crt.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Data directory whose tls/ca.crt to trust when --ca is not given.
    #[arg(long, env = "WARBLER_DATA", default_value = "warbler-data")]
    data: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

pub fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let ca = args
        .ca
        .unwrap_or_else(|| args.data.join("tls").join("ca.crt"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reply = runtime.block_on(async {
        let client = Client::new(&args.url, &ca)?;
        let call = client.call(Method::GET, "/readyz", None, None);
        match tokio::time::timeout(Duration::from_secs(args.timeout), call).await {
            Ok(reply) => Ok(reply?),
            Err(_) => bail!("no answer from {} within {} s", args.url, args.timeout),
        }
    })?;
    println!("{}", reply.body);
    Ok(if reply.status == StatusCode::OK {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
