//! `peers-bench`: load clients for soketi, mosquitto and nats-server with the workload
//! shapes of `warbler bench` (idle connections and the server's RSS per connection; 1 → N
//! fan-out with deliveries/s and latency), for `benches/run-peers.sh`. Plain TCP, loopback.

mod connections;
mod fanout;
mod mqtt;
mod nats;
mod net;
mod peer;
mod pusher;
mod stats;
mod sys;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Sockets one load process may hold (the machine caps a process at 20,000 open files).
pub const MAX_CONNS_PER_PROCESS: usize = 15_000;

pub(crate) fn progress(enabled: bool, line: &str) {
    if enabled {
        eprintln!("peers-bench: {line}");
    }
}

#[derive(Parser)]
#[command(about = "Load clients for soketi, mosquitto and nats-server (loopback, plain TCP)")]
struct Cli {
    /// Which server speaks at --addr.
    #[arg(long, value_enum, global = true, default_value = "nats")]
    peer: peer::Kind,
    /// The server's address (WebSocket and HTTP API for soketi).
    #[arg(long, global = true, default_value = "127.0.0.1:4222")]
    addr: SocketAddr,
    /// The server's pid: its RSS and CPU are read from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// soketi app id, key and secret.
    #[arg(long, global = true, default_value = "app-id")]
    app_id: String,
    #[arg(long, global = true, default_value = "app-key")]
    app_key: String,
    #[arg(long, global = true, default_value = "app-secret")]
    app_secret: String,
    /// MQTT QoS of subscriptions and publishes (0 or 1).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N idle subscribed connections; the server's RSS per connection.
    Connections {
        #[arg(short, long, default_value_t = 1000)]
        n: usize,
        /// Seconds to hold them open.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Source addresses 127.0.0.2 … to spread the sockets over.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=200))]
        sources: u8,
        /// Connection attempts in flight.
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
    },
    /// N subscribers on one channel/topic/subject, M broadcasts flat out.
    Fanout {
        #[arg(short, long, default_value_t = 1000)]
        devices: usize,
        #[arg(short = 'm', long, default_value_t = 200)]
        broadcasts: usize,
        /// HTTP API connections publishing in parallel (soketi only).
        #[arg(long, default_value_t = 64)]
        senders: usize,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=200))]
        sources: u8,
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Stop waiting after this many seconds without a delivery.
        #[arg(long, default_value_t = 10)]
        drain_idle: u64,
    },
}

fn print<T: serde::Serialize>(report: &T, json: bool) -> anyhow::Result<()> {
    let text = if json {
        serde_json::to_string(report)?
    } else {
        serde_json::to_string_pretty(report)?
    };
    println!("{text}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Arc::new(peer::Target {
        kind: cli.peer,
        addr: cli.addr,
        app: pusher::App {
            id: cli.app_id,
            key: cli.app_key,
            secret: cli.app_secret,
        },
        qos: cli.qos,
        run: rand::random::<u64>() >> 8,
    });
    let rt = tokio::runtime::Runtime::new()?;
    let show = !cli.quiet;
    match cli.scenario {
        Scenario::Connections {
            n,
            hold,
            sources,
            concurrency,
        } => {
            let o = connections::Options {
                n,
                hold: Duration::from_secs(hold),
                sources,
                concurrency,
                server_pid: cli.server_pid,
                progress: show,
            };
            print(&rt.block_on(connections::run(target, o))?, cli.json)
        }
        Scenario::Fanout {
            devices,
            broadcasts,
            senders,
            sources,
            concurrency,
            drain_idle,
        } => {
            let o = fanout::Options {
                devices,
                broadcasts,
                senders,
                sources,
                concurrency,
                drain_idle: Duration::from_secs(drain_idle),
                server_pid: cli.server_pid,
                progress: show,
            };
            print(&rt.block_on(fanout::run(target, o))?, cli.json)
        }
    }
}
