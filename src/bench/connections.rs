//! `connections`: `N` idle device connections (TLS WebSocket), spread over loopback source
//! addresses 127.0.0.2.. so ephemeral ports never run out, held for a while. With the
//! server's pid it reports the server's resident memory per connection: `VmRSS` after the
//! hold minus `VmRSS` just before connecting (after registering), over the connections held.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::net::{close_ws, Endpoint};
use super::stats::{histogram, record, round3, Summary};
use super::{open_api_conns, progress, rate, register_devices, sys};

/// Longest one connection attempt (TCP, TLS, upgrade, welcome) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the whole connect phase may take.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(600);
/// Files this process needs besides the device sockets (API connections, runtime, stdio).
const FD_RESERVE: u64 = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections to open.
    pub n: usize,
    /// Seconds to hold them all open.
    pub hold: Duration,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1 + sources); 0 lets the kernel choose.
    pub sources: u8,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// API connections used to register the devices.
    pub clients: usize,
    /// Server process whose memory to read.
    pub server_pid: Option<u32>,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// The outcome, in the shape `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub source_addresses: usize,
    pub register_s: f64,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub connect_latency: Summary,
    pub hold_s: f64,
    /// Connections the server closed during the hold.
    pub dropped: usize,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_after_hold_kib: Option<u64>,
    pub server_rss_after_close_kib: Option<u64>,
    /// (after hold − before) / connected.
    pub server_rss_per_connection_kib: Option<f64>,
    /// This (client) process, for comparison.
    pub client_rss_per_connection_kib: Option<f64>,
}

#[allow(clippy::cast_precision_loss)]
fn per_connection(before: Option<u64>, after: Option<u64>, n: usize) -> Option<f64> {
    let (b, a) = (before?, after?);
    (n > 0).then(|| round3((a as f64 - b as f64) / n as f64))
}

#[derive(Default)]
struct Counters {
    connected: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
}

/// Connects one device (at most `concurrency` attempts at once), then holds the connection,
/// reading so pings are answered, until `stop`. Returns how long connecting took.
async fn hold_one(
    ep: Arc<Endpoint>,
    token: String,
    local: Option<IpAddr>,
    sem: Arc<Semaphore>,
    stop: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Duration, String> {
    let permit = sem.acquire_owned().await;
    let t0 = Instant::now();
    let attempt =
        tokio::time::timeout(CONNECT_TIMEOUT, ep.device_ws(&token, local, 4 * 1024)).await;
    let took = t0.elapsed();
    drop(permit);
    let mut ws = match attempt {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return Err(format!("{e:#}"));
        }
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return Err(format!("no welcome within {CONNECT_TIMEOUT:?}"));
        }
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                close_ws(ws).await;
                break;
            }
            m = ws.next() => if let Some(Ok(_)) = m {} else {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    Ok(took)
}

fn check_fd_limit(opts: &Options) -> anyhow::Result<()> {
    let n = opts.n as u64;
    if let (Some(limit), Some(open)) = (sys::open_files_limit(), sys::open_files()) {
        let need = open + n + opts.clients as u64 + FD_RESERVE;
        if need > limit {
            bail!(
                "-n {} needs about {need} open files in this process but its limit (ulimit -n) \
                 is {limit}; at most about {} connections fit. Lower -n (or raise the limit \
                 where that is possible; on this machine it is not)",
                opts.n,
                limit.saturating_sub(open + opts.clients as u64 + FD_RESERVE)
            );
        }
    }
    if opts.n > 15_000 {
        progress(
            opts.progress,
            "warning: more than 15,000 connections: the server's own limits \
             (server.max_connections, 19,000 by default; 20,000 open files) come close",
        );
    }
    Ok(())
}

/// 127.0.0.2 ..= 127.0.0.(1 + count) when the server is on IPv4 loopback; else none.
pub(crate) fn source_addresses(endpoint: &Endpoint, count: u8) -> Vec<IpAddr> {
    match endpoint.addr().ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (0..count)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i.min(253))))
            .collect(),
        _ => Vec::new(),
    }
}

/// Waits (bounded) until every attempt has connected or failed, with progress each second.
async fn wait_connected(counters: &Counters, n: usize, start: Instant, show: bool) {
    let deadline = start + CONNECT_PHASE_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        let c = counters.connected.load(Ordering::Relaxed);
        let f = counters.failed.load(Ordering::Relaxed);
        if c + f >= n {
            return;
        }
        if Instant::now() >= deadline {
            progress(
                show,
                "connect phase hit its time limit; measuring what is connected",
            );
            return;
        }
        tick.tick().await;
        let c = counters.connected.load(Ordering::Relaxed);
        let f = counters.failed.load(Ordering::Relaxed);
        progress(
            show,
            &format!(
                "connected {c}/{n} ({:.0}/s), failed {f}",
                rate(c, start.elapsed())
            ),
        );
    }
}

/// Sleeps through the hold, with progress every 5 s.
async fn hold(counters: &Counters, n_connected: usize, opts: &Options) {
    let start = Instant::now();
    while start.elapsed() < opts.hold {
        let left = opts.hold.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(5))).await;
        let dropped = counters.dropped.load(Ordering::Relaxed);
        progress(
            opts.progress,
            &format!(
                "held {:.0} s, {} open, {dropped} dropped{}",
                start.elapsed().as_secs_f64(),
                n_connected.saturating_sub(dropped),
                opts.server_pid
                    .and_then(sys::vm_rss_kib)
                    .map(|k| format!(", server RSS {k} KiB"))
                    .unwrap_or_default()
            ),
        );
    }
}

/// Waits (at most 60 s) for every connection task after `stop`; returns the connect-time
/// histogram and the first error.
async fn close_all(
    mut tasks: tokio::task::JoinSet<Result<Duration, String>>,
    show: bool,
) -> (Histogram<u64>, Option<String>) {
    let mut latency = histogram();
    let mut first_error = None;
    let closing = async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(took)) => record(&mut latency, took),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(format!("connection task: {e}"));
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), closing)
        .await
        .is_err()
    {
        progress(show, "some connections did not close within 60 s");
    }
    (latency, first_error)
}

/// Runs the scenario.
///
/// # Errors
/// More connections than this process may open, or setup failures.
pub async fn run(endpoint: Arc<Endpoint>, opts: Options) -> anyhow::Result<Report> {
    let show = opts.progress;
    if opts.n == 0 || opts.clients == 0 || opts.concurrency == 0 {
        bail!("-n, --clients and --concurrency must be at least 1");
    }
    check_fd_limit(&opts)?;
    let sources = source_addresses(&endpoint, opts.sources);

    progress(show, &format!("opening {} API connections", opts.clients));
    let conns = open_api_conns(&endpoint, opts.clients).await?;
    progress(show, &format!("registering {} devices", opts.n));
    let reg_start = Instant::now();
    let (devices, conns) = register_devices(&endpoint, conns, opts.n, show).await?;
    let register_s = reg_start.elapsed().as_secs_f64();
    drop(conns);

    let client_rss_before = sys::vm_rss_kib(std::process::id());
    let server_rss_before = opts.server_pid.and_then(sys::vm_rss_kib);
    progress(
        show,
        &format!(
            "connecting {} devices from {} source address(es), {} at a time",
            opts.n,
            sources.len().max(1),
            opts.concurrency
        ),
    );
    let sem = Arc::new(Semaphore::new(opts.concurrency));
    let stop = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    let connect_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, device) in devices.into_iter().enumerate() {
        let local = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        tasks.spawn(hold_one(
            Arc::clone(&endpoint),
            device.token,
            local,
            Arc::clone(&sem),
            stop.clone(),
            Arc::clone(&counters),
        ));
    }
    wait_connected(&counters, opts.n, connect_start, show).await;
    let connect_s = connect_start.elapsed().as_secs_f64();
    let n_connected = counters.connected.load(Ordering::Relaxed);
    let connects_per_s = rate(n_connected, connect_start.elapsed()).round();

    // Let the server settle (sessions finish their first store read), then hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_rss_connected = opts.server_pid.and_then(sys::vm_rss_kib);
    progress(
        show,
        &format!(
            "holding {n_connected} connections for {:.0} s",
            opts.hold.as_secs_f64()
        ),
    );
    let hold_start = Instant::now();
    hold(&counters, n_connected, &opts).await;
    let hold_s = hold_start.elapsed().as_secs_f64();
    let server_rss_after_hold = opts.server_pid.and_then(sys::vm_rss_kib);
    let client_rss_after = sys::vm_rss_kib(std::process::id());
    let n_dropped = counters.dropped.load(Ordering::Relaxed);

    progress(show, "closing");
    stop.cancel();
    let (latency, first_error) = close_all(tasks, show).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_rss_after_close = opts.server_pid.and_then(sys::vm_rss_kib);

    Ok(Report {
        scenario: "connections",
        requested: opts.n,
        connected: n_connected,
        failed: counters.failed.load(Ordering::Relaxed),
        first_error,
        source_addresses: sources.len(),
        register_s: round3(register_s),
        connect_s: round3(connect_s),
        connects_per_s,
        connect_latency: Summary::of(&latency),
        hold_s: round3(hold_s),
        dropped: n_dropped,
        server_rss_before_kib: server_rss_before,
        server_rss_connected_kib: server_rss_connected,
        server_rss_after_hold_kib: server_rss_after_hold,
        server_rss_after_close_kib: server_rss_after_close,
        server_rss_per_connection_kib: per_connection(
            server_rss_before,
            server_rss_after_hold,
            n_connected,
        ),
        client_rss_per_connection_kib: per_connection(
            client_rss_before,
            client_rss_after,
            n_connected,
        ),
    })
}

impl Report {
    /// The human-readable form.
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "connections: {} of {} connected ({} failed), {} source address(es)",
            self.connected,
            self.requested,
            self.failed,
            self.source_addresses.max(1)
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "  first error     {e}");
        }
        let _ = writeln!(
            s,
            "  registered in   {:.1} s; connected in {:.1} s ({:.0}/s)",
            self.register_s, self.connect_s, self.connects_per_s
        );
        let _ = writeln!(s, "  connect time    {}", self.connect_latency.line());
        let _ = writeln!(
            s,
            "  held            {:.1} s, {} dropped by the server",
            self.hold_s, self.dropped
        );
        let kib = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |k| format!("{k} KiB"));
        if self.server_rss_before_kib.is_some() {
            let _ = writeln!(
                s,
                "  server RSS      before {}, connected {}, after hold {}, after close {}",
                kib(self.server_rss_before_kib),
                kib(self.server_rss_connected_kib),
                kib(self.server_rss_after_hold_kib),
                kib(self.server_rss_after_close_kib),
            );
        }
        if let Some(k) = self.server_rss_per_connection_kib {
            let _ = writeln!(s, "  server RSS per connection  {k:.2} KiB");
        }
        if let Some(k) = self.client_rss_per_connection_kib {
            let _ = writeln!(s, "  client RSS per connection  {k:.2} KiB");
        }
        s
    }
}
