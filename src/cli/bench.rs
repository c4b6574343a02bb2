//! `warbler bench`: load-test a running server (see `docs/benchmarks.md`).
//!
//! The target comes from `--url`, `--ca`, `--api-key`, `--client-key`, or from a data
//! directory (`--data DIR`: its `initial-credentials.json` and `tls/ca.crt`); explicit flags
//! win. Results go to stdout (`--json` for one JSON object); progress goes to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::bench::{connections, fanout, storm, unicast, Endpoint, HttpVersion};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Server base URL.
    #[arg(long, global = true, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// Data directory of the server: credentials and CA are read from it.
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// CA certificate (PEM) to trust; default DATA/tls/ca.crt.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// API key with scope `push`; default from DATA/initial-credentials.json.
    #[arg(long, global = true, env = "WARBLER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Client key to register devices with; default from DATA/initial-credentials.json.
    #[arg(
        long,
        global = true,
        env = "WARBLER_CLIENT_KEY",
        hide_env_values = true
    )]
    client_key: Option<String>,
    /// Offer HTTP/2 to the API (default HTTP/1.1 only).
    #[arg(long, global = true)]
    http2: bool,
    /// The server's process id: report its CPU use and resident memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Print the result as one JSON object.
    #[arg(long, global = true)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Push to random connected devices; report pushes/s, API and end-to-end latency.
    Unicast(UnicastArgs),
    /// Hold many idle device connections; report server memory per connection.
    Connections(ConnectionsArgs),
    /// Broadcast to many connected devices; report deliveries/s and send → receipt latency.
    Fanout(FanoutArgs),
    /// Offline devices with pending messages reconnect at once; report the time until all
    /// are delivered.
    Storm(StormArgs),
}

#[derive(Debug, Args)]
struct UnicastArgs {
    /// Devices to register and connect (only register, with --offline).
    #[arg(long, short = 'd', default_value_t = 64)]
    devices: usize,
    /// Concurrent API clients, each with one request in flight.
    #[arg(long, short = 'k', default_value_t = 64)]
    clients: usize,
    /// API connections the clients share, as an HTTP/2 client pool would (needs --http2
    /// below --clients; default: one connection per client).
    #[arg(long)]
    connections: Option<usize>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds pushed before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Total pushes per second across all clients (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// Pushes per request: above 1, each request is a `POST /v1/messages/batch` of this
    /// many pushes, each to a random device (at most 500).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=500))]
    batch: u16,
    /// Register the devices but never connect them: every push is stored for later
    /// delivery, so this measures the durable intake alone (no end-to-end latency).
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Args)]
struct ConnectionsArgs {
    /// Connections to open (this process may open at most `ulimit -n` files; keep ≤ 15,000).
    #[arg(short = 'n', long = "connections", default_value_t = 1000)]
    n: usize,
    /// Seconds to hold them open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Source addresses to spread over: 127.0.0.2 ..= 127.0.0.(1+S); 0: kernel's choice.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=250))]
    sources: u8,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// API connections used to register the devices.
    #[arg(long, short = 'k', default_value_t = 32)]
    clients: usize,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// Devices to register and connect (this process may open at most `ulimit -n` files).
    #[arg(long, short = 'd', default_value_t = 1000)]
    devices: usize,
    /// Broadcasts to send.
    #[arg(long, short = 'm', default_value_t = 200)]
    broadcasts: usize,
    /// Total broadcasts per second (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// API connections sending the broadcasts, one request at a time each. Flat out, the
    /// send rate is about senders / API latency, so too few senders measure the API's
    /// commit latency rather than the fan-out.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Broadcast to this topic (every device subscribed with PATCH) instead of `all`.
    #[arg(long)]
    topic: Option<String>,
    /// Source addresses to spread over: 127.0.0.2 ..= 127.0.0.(1+S); 0: kernel's choice.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=250))]
    sources: u8,
    /// WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// API connections used to register (and subscribe) the devices.
    #[arg(long, short = 'k', default_value_t = 32)]
    clients: usize,
    /// Stop waiting for deliveries after this many seconds without one.
    #[arg(long, default_value_t = 10.0)]
    drain_idle: f64,
}

#[derive(Debug, Args)]
struct StormArgs {
    /// Devices (this process may open at most `ulimit -n` files; keep ≤ 15,000).
    #[arg(long, short = 'd', default_value_t = 1000)]
    devices: usize,
    /// Messages pending for each device when they reconnect (at most 1,000).
    #[arg(long, short = 'p', default_value_t = 10)]
    pending: usize,
    /// Source addresses to spread over: 127.0.0.2 ..= 127.0.0.(1+S); 0: kernel's choice.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=250))]
    sources: u8,
    /// WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// API connections used to register the devices and push their backlog.
    #[arg(long, short = 'k', default_value_t = 32)]
    clients: usize,
    /// A device gives up after this many seconds without a frame while messages are missing.
    #[arg(long, default_value_t = 30.0)]
    idle: f64,
    /// Register the devices and store their backlog, then stop (no storm).
    #[arg(long)]
    load_only: bool,
    /// Connect every device once before storing its backlog, so that the storm's devices
    /// resume their TLS sessions (a fleet dropped by a network failure). Without it they
    /// have never connected and every handshake is a full one.
    #[arg(long)]
    warm: bool,
}

#[derive(Deserialize)]
struct InitialCredentials {
    api_key: Option<String>,
    client_key: Option<String>,
    ca_cert: Option<PathBuf>,
}

fn read_credentials(data: &Path) -> anyhow::Result<InitialCredentials> {
    let path = data.join("initial-credentials.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

fn endpoint(t: &TargetArgs) -> anyhow::Result<Endpoint> {
    let creds = t.data.as_deref().map(read_credentials).transpose()?;
    // Needed for an https:// URL only (a server with tls.mode = "off" has no CA).
    let ca =
        t.ca.clone()
            .or_else(|| t.data.as_ref().map(|d| d.join("tls/ca.crt")))
            .or_else(|| creds.as_ref().and_then(|c| c.ca_cert.clone()));
    let api_key = t
        .api_key
        .clone()
        .or_else(|| creds.as_ref().and_then(|c| c.api_key.clone()))
        .ok_or_else(|| anyhow!("give --api-key (or --data DIR)"))?;
    let client_key = t
        .client_key
        .clone()
        .or_else(|| creds.as_ref().and_then(|c| c.client_key.clone()))
        .ok_or_else(|| anyhow!("give --client-key (or --data DIR)"))?;
    let http = if t.http2 {
        HttpVersion::Http2
    } else {
        HttpVersion::Http1
    };
    Endpoint::new(&t.url, ca.as_deref(), &api_key, &client_key, http)
}

fn seconds(flag: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow!("--{flag} must be a number of seconds ≥ 0"))
}

fn print<T: serde::Serialize>(json: bool, report: &T, human: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{human}");
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let t = &args.target;
    let endpoint = Arc::new(endpoint(t)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("warbler-bench")
        .build()
        .context("cannot start the async runtime")?;
    let progress = !t.quiet;
    match args.scenario {
        Scenario::Unicast(u) => {
            let opts = unicast::Options {
                devices: u.devices,
                clients: u.clients,
                connections: u.connections,
                duration: seconds("duration", u.duration)?,
                warmup: seconds("warmup", u.warmup)?,
                rate: u.rate,
                batch: usize::from(u.batch),
                offline: u.offline,
                server_pid: t.server_pid,
                progress,
            };
            let report = runtime.block_on(unicast::run(endpoint, opts))?;
            print(t.json, &report, &report.render())?;
        }
        Scenario::Connections(c) => {
            let opts = connections::Options {
                n: c.n,
                hold: seconds("hold", c.hold)?,
                sources: c.sources,
                concurrency: c.concurrency,
                clients: c.clients,
                server_pid: t.server_pid,
                progress,
            };
            let report = runtime.block_on(connections::run(endpoint, opts))?;
            print(t.json, &report, &report.render())?;
        }
        Scenario::Fanout(f) => {
            let opts = fanout::Options {
                devices: f.devices,
                broadcasts: f.broadcasts,
                rate: f.rate,
                senders: f.senders,
                topic: f.topic,
                sources: f.sources,
                concurrency: f.concurrency,
                clients: f.clients,
                drain_idle: seconds("drain-idle", f.drain_idle)?,
                server_pid: t.server_pid,
                progress,
            };
            let report = runtime.block_on(fanout::run(endpoint, opts))?;
            print(t.json, &report, &report.render())?;
        }
        Scenario::Storm(st) => {
            let opts = storm::Options {
                devices: st.devices,
                pending: st.pending,
                sources: st.sources,
                concurrency: st.concurrency,
                clients: st.clients,
                idle: seconds("idle", st.idle)?,
                load_only: st.load_only,
                warm: st.warm,
                server_pid: t.server_pid,
                progress,
            };
            let report = runtime.block_on(storm::run(endpoint, opts))?;
            print(t.json, &report, &report.render())?;
        }
    }
    // Do not wait for lingering connection tasks.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}
