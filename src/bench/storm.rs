//! `storm`: `N` offline devices with `P` pending messages each reconnect at once (a fleet
//! coming back after an outage or a server restart); how long until every message reached
//! its device.
//!
//! - Devices register over `--clients` API connections; then `P` pushes per group of up to
//!   1,000 devices (`{"to":{"devices":[…]}}`) leave `P` messages in every mailbox, each
//!   carrying `data: {"p": <index>, "r": <run id>}`.
//! - The storm: every device connects at once (TLS WebSocket from 127.0.0.2.., at most
//!   `--concurrency` handshakes in flight: that is the kernel's accept queue, not a pacing),
//!   reads its backlog and acks it in batches as an SDK would, and stops once it has all `P`.
//! - Storm time = first connect attempt → last device holding all its messages. Also per
//!   device: connect time and time to complete, as percentiles.
//! - Devices do not resume TLS sessions (a fleet that never connected). With `--warm` every
//!   device connects once before its backlog is stored, keeping its own session ticket, and
//!   the storm resumes with it (a fleet dropped by a network failure or a load balancer).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use super::ack::AckFrame;
use super::connections::source_addresses;
use super::net::{close_ws, connect_device, Device, DeviceWs, Endpoint};
use super::stats::{histogram, merge, record, round3, Summary};
use super::{open_api_conns, progress, rate, register_devices, sys, ApiConn};

/// Longest one connection attempt (TCP, TLS, upgrade, welcome) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the whole storm may take.
const STORM_LIMIT: Duration = Duration::from_secs(600);
/// Most devices in one push (the API's bound on `devices`).
const GROUP: usize = 1000;
/// Most pending messages per device (the default mailbox holds more; gaps would skew this).
const MAX_PENDING: usize = 1000;
/// Most ids in one ack frame (the server allows 1,000).
const ACK_BATCH: usize = 500;
/// Read buffer of each device WebSocket.
const READ_BUFFER: usize = 8 * 1024;
/// Files this process needs besides the device sockets.
const FD_RESERVE: u64 = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub devices: usize,
    /// Messages waiting for each device when the storm starts.
    pub pending: usize,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1 + sources); 0 lets the kernel choose.
    pub sources: u8,
    /// WebSocket handshakes in flight at once.
    pub concurrency: usize,
    /// API connections used to register devices and load their mailboxes.
    pub clients: usize,
    /// A device gives up after this long without a frame while still missing messages.
    pub idle: Duration,
    /// Register and load the mailboxes, then stop without connecting (to measure a restart
    /// with that backlog, say).
    pub load_only: bool,
    /// Connect every device once first, so that the storm resumes TLS sessions.
    pub warm: bool,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

/// The outcome, in the shape `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub http: &'static str,
    pub devices: usize,
    pub pending_per_device: usize,
    pub source_addresses: usize,
    pub register_s: f64,
    /// `--warm`: time to connect (and close) every device once before the backlog.
    pub warm_s: Option<f64>,
    /// Storm connections whose TLS handshake resumed a session.
    pub tls_resumed: usize,
    /// Time to push the backlog (`pushes` requests of up to 1,000 devices each).
    pub load_s: f64,
    pub pushes: usize,
    pub connected: usize,
    pub connect_failed: usize,
    pub first_error: Option<String>,
    /// First connect attempt → last device connected.
    pub connect_s: f64,
    /// First connect attempt → last device holding all its messages: the figure.
    pub storm_s: f64,
    /// Devices that got all their messages.
    pub complete: usize,
    pub expected: u64,
    pub delivered_distinct: u64,
    pub duplicates: u64,
    pub missing: u64,
    pub deliveries_per_s: f64,
    pub ack_frames: u64,
    /// Storm start → this device's `welcome`.
    pub connect_latency: Summary,
    /// Storm start → this device holding all its messages.
    pub complete_latency: Summary,
    pub server_cpu_cores: Option<f64>,
    /// CPU seconds over the storm: the server, and this load generator.
    pub server_cpu_s: Option<f64>,
    pub client_cpu_s: Option<f64>,
    /// Percent of the machine's CPU time the hypervisor took for others during the storm
    /// (`steal` in `/proc/stat`; 0 on bare metal).
    pub machine_steal_pct: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
}

/// What the device tasks share.
struct Shared {
    run_id: u32,
    pending: usize,
    connected: AtomicUsize,
    failed: AtomicUsize,
    complete: AtomicUsize,
    delivered: AtomicU64,
    /// Storm handshakes that resumed a TLS session.
    resumed: AtomicUsize,
}

/// Runs the scenario.
///
/// # Errors
/// Bad options, more sockets than this process may open, or setup failures.
pub async fn run(endpoint: Arc<Endpoint>, opts: Options) -> anyhow::Result<Report> {
    validate(&opts)?;
    let show = opts.progress;
    let sources = source_addresses(&endpoint, opts.sources);
    progress(show, &format!("opening {} API connections", opts.clients));
    let conns = open_api_conns(&endpoint, opts.clients).await?;
    let http = conns[0].version().label();
    progress(show, &format!("registering {} devices", opts.devices));
    let t = Instant::now();
    let (devices, conns) = register_devices(&endpoint, conns, opts.devices, show).await?;
    let register_s = round3(t.elapsed().as_secs_f64());
    let clients: Vec<_> = devices
        .iter()
        .map(|_| {
            if opts.warm {
                endpoint.device_tls()
            } else {
                None
            }
        })
        .collect();
    let warm_s = if opts.warm && !opts.load_only {
        progress(
            show,
            &format!("warm: connecting each of {} devices once", opts.devices),
        );
        let t = Instant::now();
        warm(&endpoint, &devices, &clients, &sources, opts.concurrency).await?;
        Some(round3(t.elapsed().as_secs_f64()))
    } else {
        None
    };

    let run_id = rand::random::<u32>();
    let t = Instant::now();
    let pushes = load(&endpoint, conns, &devices, opts.pending, run_id, show).await?;
    let load_s = round3(t.elapsed().as_secs_f64());
    if opts.load_only {
        progress(show, "--load-only: the backlog is stored; not connecting");
    }

    let shared = Arc::new(Shared {
        run_id,
        pending: opts.pending,
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        resumed: AtomicUsize::new(0),
    });
    progress(
        show,
        &format!(
            "storm: {} devices with {} pending each reconnect at once ({} handshakes in flight)",
            opts.devices, opts.pending, opts.concurrency
        ),
    );
    let rss_before = opts.server_pid.and_then(sys::vm_rss_kib);
    let cpu0 = opts.server_pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let client0 = sys::cpu_seconds(None);
    let ticks0 = sys::machine_ticks();
    let sem = Arc::new(Semaphore::new(opts.concurrency));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let storming = if opts.load_only { 0 } else { devices.len() };
    let pairs = devices.into_iter().zip(clients).take(storming);
    for (i, (device, tls)) in pairs.enumerate() {
        let local = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        tasks.spawn(device_task(DeviceTask {
            endpoint: Arc::clone(&endpoint),
            token: device.token,
            tls,
            local,
            sem: Arc::clone(&sem),
            shared: Arc::clone(&shared),
            start,
            idle: opts.idle,
        }));
    }
    let out = collect(&mut tasks, &shared, storming, start, show).await;
    let storm_s = round3(out.last_complete.as_secs_f64());
    let cpu1 = opts.server_pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let client1 = sys::cpu_seconds(None);
    let machine_steal_pct = ticks0
        .zip(sys::machine_ticks())
        .and_then(|(a, b)| sys::steal_pct(a, b));
    let rss_after = opts.server_pid.and_then(sys::vm_rss_kib);
    let expected = (opts.devices * opts.pending) as u64;
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let window = out.last_complete.as_secs_f64();
    Ok(Report {
        scenario: "storm",
        http,
        devices: opts.devices,
        pending_per_device: opts.pending,
        source_addresses: sources.len(),
        register_s,
        warm_s,
        tls_resumed: shared.resumed.load(Ordering::Relaxed),
        load_s,
        pushes,
        connected: shared.connected.load(Ordering::Relaxed),
        connect_failed: shared.failed.load(Ordering::Relaxed),
        first_error: out.first_error,
        connect_s: round3(out.last_connect.as_secs_f64()),
        storm_s,
        complete: shared.complete.load(Ordering::Relaxed),
        expected,
        delivered_distinct: out.distinct,
        duplicates: delivered.saturating_sub(out.distinct),
        missing: expected.saturating_sub(out.distinct),
        #[allow(clippy::cast_precision_loss)]
        deliveries_per_s: if window > 0.0 {
            (out.distinct as f64 / window).round()
        } else {
            0.0
        },
        ack_frames: out.ack_frames,
        connect_latency: Summary::of(&out.connect),
        complete_latency: Summary::of(&out.complete),
        server_cpu_cores: cpu0
            .zip(cpu1)
            .filter(|_| window > 0.0)
            .map(|(a, b)| round3((b - a) / window)),
        server_cpu_s: cpu0.zip(cpu1).map(|(a, b)| round3(b - a)),
        client_cpu_s: client0.zip(client1).map(|(a, b)| round3(b - a)),
        machine_steal_pct,
        server_rss_kib_before: rss_before,
        server_rss_kib_after: rss_after,
    })
}

fn validate(opts: &Options) -> anyhow::Result<()> {
    if opts.devices == 0 || opts.pending == 0 || opts.clients == 0 || opts.concurrency == 0 {
        bail!("--devices, --pending, --clients and --concurrency must be at least 1");
    }
    if opts.pending > MAX_PENDING {
        bail!("--pending must be at most {MAX_PENDING}");
    }
    if let (Some(limit), Some(open)) = (sys::open_files_limit(), sys::open_files()) {
        let need = open + opts.devices as u64 + opts.clients as u64 + FD_RESERVE;
        if need > limit {
            bail!(
                "{} devices need about {need} open files in this process but its limit \
                 (ulimit -n) is {limit}",
                opts.devices
            );
        }
    }
    Ok(())
}

/// Pushes `pending` messages to every device, in groups of up to [`GROUP`] devices per
/// push, over all `conns`; returns the number of pushes.
async fn load(
    endpoint: &Arc<Endpoint>,
    conns: Vec<ApiConn>,
    devices: &[Device],
    pending: usize,
    run_id: u32,
    show: bool,
) -> anyhow::Result<usize> {
    let groups: Vec<Vec<String>> = devices
        .chunks(GROUP)
        .map(|c| c.iter().map(|d| d.device_id.clone()).collect())
        .collect();
    // Message p for every group before message p + 1, so each mailbox fills in order.
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..pending)
            .flat_map(|p| {
                groups.iter().map(move |g| {
                    let body = serde_json::json!({
                        "to": {"devices": g},
                        "data": {"p": p, "r": run_id},
                    });
                    Bytes::from(body.to_string())
                })
            })
            .collect(),
    );
    let total = bodies.len();
    progress(
        show,
        &format!("loading {pending} messages per device ({total} pushes)"),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (ep, bodies, next) = (Arc::clone(endpoint), Arc::clone(&bodies), Arc::clone(&next));
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok(());
                };
                let (status, reply) = conn
                    .post("/v1/messages", ep.api_auth(), body.clone())
                    .await?;
                if status != StatusCode::ACCEPTED {
                    bail!(
                        "push answered {status}: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("load task")??;
    }
    Ok(total)
}

struct DeviceTask {
    endpoint: Arc<Endpoint>,
    token: String,
    /// The device's own TLS client (`--warm`), else the shared one.
    tls: Option<TlsConnector>,
    local: Option<IpAddr>,
    sem: Arc<Semaphore>,
    shared: Arc<Shared>,
    start: Instant,
    idle: Duration,
}

/// What one device saw.
#[derive(Default)]
struct DeviceResult {
    connected_after: Option<Duration>,
    complete_after: Option<Duration>,
    distinct: u64,
    ack_frames: u64,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    id: Option<&'a str>,
    data: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    p: Option<usize>,
    r: Option<u32>,
}

/// Connects every device once through its own TLS client (at most `concurrency`
/// handshakes at once) and closes, so each holds a session ticket for the storm.
///
/// # Errors
/// The first device that could not connect.
async fn warm(
    endpoint: &Arc<Endpoint>,
    devices: &[Device],
    clients: &[Option<TlsConnector>],
    sources: &[IpAddr],
    concurrency: usize,
) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for (i, (device, tls)) in devices.iter().zip(clients).enumerate() {
        let local = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let (ep, sem, token, tls) = (
            Arc::clone(endpoint),
            Arc::clone(&sem),
            device.token.clone(),
            tls.clone(),
        );
        set.spawn(async move {
            let ws = connect_device(
                &ep,
                &token,
                local,
                sem,
                CONNECT_TIMEOUT,
                READ_BUFFER,
                tls.as_ref(),
            )
            .await?;
            close_ws(ws).await;
            Ok::<(), String>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done.context("warm-up task")?
            .map_err(|e| anyhow::anyhow!("warm-up connect failed: {e}"))?;
    }
    Ok(())
}

async fn device_task(d: DeviceTask) -> DeviceResult {
    let mut out = DeviceResult::default();
    let attempt = connect_device(
        &d.endpoint,
        &d.token,
        d.local,
        Arc::clone(&d.sem),
        CONNECT_TIMEOUT,
        READ_BUFFER,
        d.tls.as_ref(),
    )
    .await;
    let ws = match attempt {
        Ok(ws) => ws,
        Err(e) => {
            d.shared.failed.fetch_add(1, Ordering::Relaxed);
            out.error = Some(e);
            return out;
        }
    };
    out.connected_after = Some(d.start.elapsed());
    d.shared.connected.fetch_add(1, Ordering::Relaxed);
    if ws.get_ref().resumed() {
        d.shared.resumed.fetch_add(1, Ordering::Relaxed);
    }
    receive(ws, &d, &mut out).await;
    out
}

/// One device's reading state.
struct Reader<'a> {
    shared: &'a Shared,
    /// Messages of this run already read, by index.
    seen: Vec<bool>,
    distinct: u64,
    /// The `ack` frame being built.
    ack: AckFrame,
}

impl Reader<'_> {
    fn on_frame(&mut self, msg: &Message) {
        let Message::Text(text) = msg else { return };
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            return;
        };
        if frame.kind != "message" {
            return;
        }
        if let Some(id) = frame.id {
            self.ack.push(id);
        }
        self.shared.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(Stamp {
            p: Some(p),
            r: Some(r),
        }) = frame.data
        {
            if r == self.shared.run_id && p < self.seen.len() && !self.seen[p] {
                self.seen[p] = true;
                self.distinct += 1;
            }
        }
    }
}

/// Reads the backlog, acking each batch of readable frames in one frame, until every
/// message of this run is in, the server closes, or it goes quiet for `idle`.
async fn receive(mut ws: DeviceWs, d: &DeviceTask, out: &mut DeviceResult) {
    let shared = &*d.shared;
    let mut r = Reader {
        shared,
        seen: vec![false; shared.pending],
        distinct: 0,
        ack: AckFrame::default(),
    };
    let closed = loop {
        let first = match tokio::time::timeout(d.idle, ws.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(_) => {
                out.error = Some("the server closed the connection".into());
                break true;
            }
            Err(_) => {
                out.error = Some(format!("no frame for {:?} with messages missing", d.idle));
                break false;
            }
        };
        r.on_frame(&first);
        let mut gone = false;
        while r.ack.len() < ACK_BATCH {
            match ws.next().now_or_never() {
                Some(Some(Ok(msg))) => r.on_frame(&msg),
                Some(Some(Err(_)) | None) => {
                    gone = true;
                    break;
                }
                None => break,
            }
        }
        if let Some(frame) = r.ack.take() {
            out.ack_frames += 1;
            if ws.send(Message::Text(frame.into())).await.is_err() {
                gone = true;
            }
        }
        out.distinct = r.distinct;
        if r.distinct == shared.pending as u64 {
            out.complete_after = Some(d.start.elapsed());
            shared.complete.fetch_add(1, Ordering::Relaxed);
            break gone;
        }
        if gone {
            out.error = Some("the server closed the connection".into());
            break true;
        }
    };
    if !closed {
        close_ws(ws).await;
    }
}

/// Totals over the devices.
struct Collected {
    distinct: u64,
    ack_frames: u64,
    last_connect: Duration,
    last_complete: Duration,
    connect: Histogram<u64>,
    complete: Histogram<u64>,
    first_error: Option<String>,
}

/// Waits for every device task (bounded by [`STORM_LIMIT`]), with progress each second.
async fn collect(
    tasks: &mut tokio::task::JoinSet<DeviceResult>,
    shared: &Shared,
    n: usize,
    start: Instant,
    show: bool,
) -> Collected {
    let mut c = Collected {
        distinct: 0,
        ack_frames: 0,
        last_connect: Duration::ZERO,
        last_complete: Duration::ZERO,
        connect: histogram(),
        complete: histogram(),
        first_error: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let deadline = tokio::time::sleep(STORM_LIMIT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(Ok(d)) => {
                    c.distinct += d.distinct;
                    c.ack_frames += d.ack_frames;
                    if let Some(t) = d.connected_after {
                        c.last_connect = c.last_connect.max(t);
                        record(&mut c.connect, t);
                    }
                    if let Some(t) = d.complete_after {
                        c.last_complete = c.last_complete.max(t);
                        record(&mut c.complete, t);
                    }
                    if c.first_error.is_none() {
                        c.first_error = d.error;
                    }
                }
                Some(Err(e)) => {
                    c.first_error.get_or_insert(format!("device task: {e}"));
                }
            },
            _ = tick.tick() => progress(show, &format!(
                "connected {}/{n} ({:.0}/s), complete {}, failed {}",
                shared.connected.load(Ordering::Relaxed),
                rate(shared.connected.load(Ordering::Relaxed), start.elapsed()),
                shared.complete.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
            )),
            () = &mut deadline => {
                progress(show, "the storm hit its time limit; stopping the devices");
                tasks.abort_all();
                c.first_error.get_or_insert(format!("not done within {STORM_LIMIT:?}"));
                break;
            }
        }
    }
    if c.complete.len() < n as u64 {
        // Incomplete devices count at the end of the run, so the percentiles do not hide them.
        let mut rest = histogram();
        let missing = n as u64 - c.complete.len();
        rest.saturating_record_n(
            u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
            missing,
        );
        merge(&mut c.complete, &rest);
        c.last_complete = start.elapsed();
    }
    c
}

impl Report {
    /// The human-readable form.
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "storm: {} devices × {} pending reconnect at once ({} source address(es), HTTP {} for the API)",
            self.devices,
            self.pending_per_device,
            self.source_addresses.max(1),
            self.http
        );
        let _ = writeln!(
            s,
            "  setup           registered in {:.1} s, {} pushes loaded the mailboxes in {:.1} s",
            self.register_s, self.pushes, self.load_s
        );
        if let Some(w) = self.warm_s {
            let _ = writeln!(
                s,
                "  warm-up         every device connected once in {w:.1} s"
            );
        }
        let _ = writeln!(
            s,
            "  tls             {} of {} storm handshakes resumed a session",
            self.tls_resumed, self.connected
        );
        let _ = writeln!(
            s,
            "  storm           all delivered in {:.3} s ({} of {} devices complete); last connect at {:.3} s",
            self.storm_s, self.complete, self.devices, self.connect_s
        );
        let _ = writeln!(
            s,
            "  delivered       {} of {} ({:.0}/s), missing {}, duplicates {}, ack frames {}",
            self.delivered_distinct,
            self.expected,
            self.deliveries_per_s,
            self.missing,
            self.duplicates,
            self.ack_frames
        );
        let _ = writeln!(
            s,
            "  connected       {} ({} failed)",
            self.connected, self.connect_failed
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "  first error     {e}");
        }
        let _ = writeln!(s, "  connect at      {}", self.connect_latency.line());
        let _ = writeln!(s, "  complete at     {}", self.complete_latency.line());
        if let (Some(c), Some(sc)) = (self.server_cpu_cores, self.server_cpu_s) {
            let _ = writeln!(
                s,
                "  CPU             server {sc:.2} s ({c:.2} cores), load generator {:.2} s{}",
                self.client_cpu_s.unwrap_or(f64::NAN),
                self.machine_steal_pct
                    .map(|p| format!("; stolen by the host {p:.1} %"))
                    .unwrap_or_default()
            );
        }
        if let (Some(a), Some(b)) = (self.server_rss_kib_before, self.server_rss_kib_after) {
            let _ = writeln!(s, "  server RSS      {a} KiB before, {b} KiB after");
        }
        s
    }
}
