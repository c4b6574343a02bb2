//! Load generators run against a live server by `warbler bench`:
//! - [`unicast`]: push throughput and latency (API and end to end) to connected devices;
//! - [`connections`]: many idle TLS WebSocket connections, and the server's memory for them;
//! - [`fanout`]: broadcasts (`all` or a topic) to many connected devices: deliveries/s and
//!   send → receipt latency;
//! - [`storm`]: many offline devices with pending messages reconnect at once; time until
//!   every message reached its device.
//!
//! The generators speak to the server the way real clients do (TLS, HTTP/1.1 or HTTP/2,
//! WebSocket), each API client on a connection of its own ([`net::ApiConn`]), so `K` clients
//! really are `K` requests in flight. Latencies go into HDR histograms in nanoseconds.

pub mod ack;
pub mod by_second;
pub mod connections;
pub mod fanout;
pub mod io;
pub mod lean_ws;
pub mod net;
pub mod stats;
pub mod storm;
pub mod sys;
pub mod unicast;

pub use net::{ApiConn, Endpoint, HttpVersion};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use net::Device;

/// Prints a progress line on stderr (the benchmarks' only chatter; results go to stdout).
pub(crate) fn progress(enabled: bool, line: &str) {
    if enabled {
        eprintln!("bench: {line}");
    }
}

/// Opens `k` API connections in parallel.
///
/// # Errors
/// The first connection failure.
pub async fn open_api_conns(endpoint: &Arc<Endpoint>, k: usize) -> anyhow::Result<Vec<ApiConn>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..k {
        let ep = Arc::clone(endpoint);
        set.spawn(async move { ep.api_conn().await });
    }
    let mut conns = Vec::with_capacity(k);
    while let Some(r) = set.join_next().await {
        conns.push(r.context("connect task")??);
    }
    Ok(conns)
}

/// Registers `n` devices using every connection in `conns` in parallel; gives the
/// connections back. Prints progress every second when `show` is set.
///
/// # Errors
/// The first registration failure.
pub async fn register_devices(
    endpoint: &Arc<Endpoint>,
    conns: Vec<ApiConn>,
    n: usize,
    show: bool,
) -> anyhow::Result<(Vec<Device>, Vec<ApiConn>)> {
    if conns.is_empty() {
        bail!("no API connection to register devices with");
    }
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut conn in conns {
        let ep = Arc::clone(endpoint);
        let next = Arc::clone(&next);
        let done = Arc::clone(&done);
        set.spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match ep.register(&mut conn).await {
                    Ok(d) => mine.push(d),
                    Err(e) => return Err(e),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok((mine, conn))
        });
    }
    let mut devices = Vec::with_capacity(n);
    let mut conns = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(r) => {
                    let (mine, conn) = r.context("registration task")??;
                    devices.extend(mine);
                    conns.push(conn);
                }
            },
            _ = tick.tick() => progress(show, &format!(
                "registered {}/{n} devices ({:.0}/s)",
                done.load(Ordering::Relaxed),
                rate(done.load(Ordering::Relaxed), started.elapsed()),
            )),
        }
    }
    Ok((devices, conns))
}

/// Events per second.
#[allow(clippy::cast_precision_loss)] // counts well below 2^52
pub(crate) fn rate(count: usize, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}
