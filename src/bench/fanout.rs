//! `fanout`: `N` connected devices, `M` broadcasts to `{"all": true}` (or to one topic all
//! of them follow), sent flat out or at a fixed rate. The server stores each broadcast once
//! and writes it to every connected device, so one push becomes `N` deliveries; this
//! measures how many deliveries per second the server manages and how long each takes.
//!
//! - Devices register over `--clients` API connections in parallel, are subscribed to the
//!   topic with `PATCH /v1/devices/{id}` `{"topics":[NAME]}` when there is one, then connect
//!   over TLS WebSocket from source addresses 127.0.0.2.. (as in `connections`), at most
//!   `--concurrency` handshakes at a time.
//! - `--senders` API connections send the broadcasts, each carrying
//!   `data: {"t": <ns since the run's epoch>, "i": <index>, "r": <run id>}`.
//! - Every device reads frames, takes every frame already readable, records send → receipt
//!   latency for each, and acks the batch in one `ack` frame (as an SDK would). Clients parse
//!   only `type`, `id` and `data`; latencies go to a few shared histograms, one lock per batch.
//! - Deliveries/s = broadcast frames received by all devices / (last receipt − first send).
//!   Missing = connected devices × accepted broadcasts − distinct (device, broadcast) pairs.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::FutureExt;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ack::AckFrame;
use super::connections::source_addresses;
use super::lean_ws::{Frame as WsFrame, LeanWs};
use super::net::{limited, Device, Endpoint};
use super::stats::{histogram, merge, record, round3, Summary};
use super::{open_api_conns, progress, rate, register_devices, sys, ApiConn};

/// Longest one connection attempt (TCP, TLS, upgrade, welcome) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the whole connect phase may take.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(600);
/// Longest the wait for deliveries after the last answer may take, however much arrives.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
/// Files this process needs besides the device sockets (API connections, runtime, stdio).
const FD_RESERVE: u64 = 64;
/// Most ids in one ack frame (the server allows 1,000).
const ACK_BATCH: usize = 500;
/// Latency histograms shared by the devices (device `i` records into shard `i % SHARDS`):
/// one 3-digit HDR histogram is ~220 KiB, too much to keep one per device.
const SHARDS: usize = 16;
/// Read buffer of each device WebSocket.
const READ_BUFFER: usize = 8 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Devices registered and connected.
    pub devices: usize,
    /// Broadcasts to send.
    pub broadcasts: usize,
    /// Total broadcasts per second; `None`: flat out.
    pub rate: Option<f64>,
    /// API connections sending broadcasts, each one request at a time.
    pub senders: usize,
    /// Broadcast to this topic (devices subscribed to it) instead of `all`.
    pub topic: Option<String>,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1 + sources); 0 lets the kernel choose.
    pub sources: u8,
    /// WebSocket handshakes in flight at once.
    pub concurrency: usize,
    /// API connections used to register (and subscribe) the devices.
    pub clients: usize,
    /// Stop waiting for deliveries after this long without one.
    pub drain_idle: Duration,
    /// Server process to read CPU time and memory of.
    pub server_pid: Option<u32>,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// The outcome, in the shape `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// `all` or `topic:NAME`.
    pub target: String,
    pub http: &'static str,
    pub devices: usize,
    pub connected: usize,
    pub connect_failed: usize,
    pub first_connect_error: Option<String>,
    pub source_addresses: usize,
    pub register_s: f64,
    pub subscribe_s: Option<f64>,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub mode: &'static str,
    pub target_rate: Option<f64>,
    pub senders: usize,
    pub broadcasts: usize,
    /// 202 answers.
    pub accepted: u64,
    /// Non-202 answers and transport failures.
    pub send_errors: u64,
    pub first_send_error: Option<String>,
    /// First send to last answer.
    pub send_s: f64,
    /// First send to the last broadcast frame any device read.
    pub delivery_s: f64,
    /// Connected devices × accepted broadcasts.
    pub expected: u64,
    /// Broadcast frames of this run read by devices (duplicates included).
    pub delivered: u64,
    /// Distinct (device, broadcast) pairs read.
    pub delivered_distinct: u64,
    pub duplicates: u64,
    /// `expected − delivered_distinct` when the run stopped waiting.
    pub missing: u64,
    /// Message frames not from this run (an older run's broadcasts), acked but not counted.
    pub foreign: u64,
    /// Text frames a device could not parse (should be 0).
    pub unparsed: u64,
    /// Devices the server disconnected before the end.
    pub device_disconnects: u64,
    /// `delivered / delivery_s`.
    pub deliveries_per_s: f64,
    /// Send (just before the API call) to the device reading the frame.
    pub latency: Summary,
    /// Request to reply of the broadcasts.
    pub api_latency: Summary,
    pub schedule_lag: Option<Summary>,
    /// In rate mode, broadcasts sent per second over the target rate.
    pub rate_held: Option<f64>,
    pub ack_frames: u64,
    /// Average cores busy from the first send to the last delivery.
    pub client_cpu_cores: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    /// Server CPU from the first send until 1 s after the last delivery (acks included),
    /// per delivered frame.
    pub server_cpu_us_per_delivery: Option<f64>,
    pub client_cpu_us_per_delivery: Option<f64>,
    /// Percent of the machine's CPU time the hypervisor took for others from the first send
    /// to the last delivery (`steal` in `/proc/stat`; 0 on bare metal).
    pub machine_steal_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
}

/// What every device task and sender shares.
struct Shared {
    epoch: Instant,
    run_id: u32,
    broadcasts: usize,
    sent: AtomicU64,
    delivered: AtomicU64,
    /// ns since `epoch` of the latest receipt of a broadcast frame.
    last_delivery_ns: AtomicU64,
    connected: AtomicUsize,
    connect_failed: AtomicUsize,
    shards: Vec<Mutex<Histogram<u64>>>,
}

fn since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Runs the scenario.
///
/// # Errors
/// Bad options, more sockets than this process may open, or setup failures (a refused
/// registration or subscription).
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
    let mut subscribe_s = None;
    if let Some(topic) = &opts.topic {
        progress(show, &format!("subscribing them to topic {topic}"));
        let t = Instant::now();
        subscribe(&endpoint, conns, &devices, topic, show).await?;
        subscribe_s = Some(round3(t.elapsed().as_secs_f64()));
    } else {
        drop(conns);
    }

    let run_id = rand::random::<u32>();
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        run_id,
        broadcasts: opts.broadcasts,
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        connected: AtomicUsize::new(0),
        connect_failed: AtomicUsize::new(0),
        shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
    });
    progress(
        show,
        &format!(
            "connecting {} devices from {} source address(es), {} at a time",
            opts.devices,
            sources.len().max(1),
            opts.concurrency
        ),
    );
    let stop = CancellationToken::new();
    let sem = Arc::new(Semaphore::new(opts.concurrency));
    let connect_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, device) in devices.into_iter().enumerate() {
        let local = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        tasks.spawn(device_task(DeviceTask {
            index: i,
            endpoint: Arc::clone(&endpoint),
            token: device.token,
            local,
            sem: Arc::clone(&sem),
            stop: stop.clone(),
            shared: Arc::clone(&shared),
        }));
    }
    wait_connected(&shared, opts.devices, connect_start, show).await;
    let connect_s = round3(connect_start.elapsed().as_secs_f64());
    let connected = shared.connected.load(Ordering::Relaxed);
    let connects_per_s = rate(connected, connect_start.elapsed()).round();
    if connected == 0 {
        stop.cancel();
        let _ = finish_devices(tasks).await;
        bail!("no device connected");
    }
    // Let every session register and read its topics before the first broadcast.
    tokio::time::sleep(Duration::from_secs(1)).await;

    progress(show, &describe(&opts, connected));
    let client_cpu0 = sys::cpu_seconds(None);
    let server_cpu0 = opts.server_pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let ticks0 = sys::machine_ticks();
    let conns = open_api_conns(&endpoint, opts.senders).await?;
    let send_start = Instant::now();
    let send_start_ns = since(shared.epoch, send_start);
    let body = Arc::new(BodyTemplate::new(opts.topic.as_deref(), run_id));
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        senders.spawn(sender(Sender {
            index: i,
            conn,
            endpoint: Arc::clone(&endpoint),
            shared: Arc::clone(&shared),
            body: Arc::clone(&body),
            next: Arc::clone(&next),
            start: send_start,
            schedule: opts.rate.map(|r| (opts.senders, r)),
        }));
    }
    let ticker = tokio::spawn(report_progress(
        Arc::clone(&shared),
        (connected * opts.broadcasts) as u64,
        show,
    ));
    let sent = collect_senders(senders).await?;
    let expected = connected as u64 * sent.accepted;
    drain(&shared, expected, opts.drain_idle, show).await;
    ticker.abort();
    let window_end = Instant::now();
    let client_cpu1 = sys::cpu_seconds(None);
    let server_cpu1 = opts.server_pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let machine_steal_pct = ticks0
        .zip(sys::machine_ticks())
        .and_then(|(a, b)| sys::steal_pct(a, b));
    // Acks and delivery bookkeeping go on after the last frame: count them too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_cpu_tail = opts.server_pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let server_rss_kib = opts.server_pid.and_then(sys::vm_rss_kib);

    progress(show, "closing");
    stop.cancel();
    let devices_out = finish_devices(tasks).await;

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let last_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let delivery_s = last_ns.saturating_sub(send_start_ns) as f64 / 1e9;
    let window = window_end.duration_since(send_start).as_secs_f64();
    let mut latency = histogram();
    for shard in &shared.shards {
        if let Ok(h) = shard.lock() {
            merge(&mut latency, &h);
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let per_delivery = |cpu: Option<f64>| {
        (delivered > 0)
            .then_some(cpu)
            .flatten()
            .map(|c| round3(c * 1e6 / delivered as f64))
    };
    #[allow(clippy::cast_precision_loss)]
    let rate_held = opts.rate.map(|r| {
        round3(
            sent.accepted as f64
                / sent
                    .last_done
                    .duration_since(send_start)
                    .as_secs_f64()
                    .max(1e-9)
                / r,
        )
    });
    Ok(Report {
        scenario: "fanout",
        target: opts
            .topic
            .as_ref()
            .map_or_else(|| "all".to_owned(), |t| format!("topic:{t}")),
        http,
        devices: opts.devices,
        connected,
        connect_failed: shared.connect_failed.load(Ordering::Relaxed),
        first_connect_error: devices_out.first_error,
        source_addresses: sources.len(),
        register_s,
        subscribe_s,
        connect_s,
        connects_per_s,
        mode: if opts.rate.is_some() {
            "rate"
        } else {
            "flat-out"
        },
        target_rate: opts.rate,
        senders: opts.senders,
        broadcasts: opts.broadcasts,
        accepted: sent.accepted,
        send_errors: sent.errors,
        first_send_error: sent.first_error,
        send_s: round3(sent.last_done.duration_since(send_start).as_secs_f64()),
        delivery_s: round3(delivery_s),
        expected,
        delivered,
        delivered_distinct: devices_out.distinct,
        duplicates: delivered.saturating_sub(devices_out.distinct),
        missing: expected.saturating_sub(devices_out.distinct),
        foreign: devices_out.foreign,
        unparsed: devices_out.unparsed,
        device_disconnects: devices_out.disconnects,
        #[allow(clippy::cast_precision_loss)]
        deliveries_per_s: if delivery_s > 0.0 {
            (delivered as f64 / delivery_s).round()
        } else {
            0.0
        },
        latency: Summary::of(&latency),
        api_latency: Summary::of(&sent.api),
        schedule_lag: opts.rate.map(|_| Summary::of(&sent.lag)),
        rate_held,
        ack_frames: devices_out.ack_frames,
        client_cpu_cores: client_cpu0
            .zip(client_cpu1)
            .map(|(a, b)| round3((b - a) / window)),
        server_cpu_cores: server_cpu0
            .zip(server_cpu1)
            .map(|(a, b)| round3((b - a) / window)),
        server_cpu_us_per_delivery: per_delivery(
            server_cpu0.zip(server_cpu_tail).map(|(a, b)| b - a),
        ),
        client_cpu_us_per_delivery: per_delivery(client_cpu0.zip(client_cpu1).map(|(a, b)| b - a)),
        machine_steal_pct,
        server_rss_kib,
    })
}

fn validate(opts: &Options) -> anyhow::Result<()> {
    if opts.devices == 0
        || opts.broadcasts == 0
        || opts.senders == 0
        || opts.clients == 0
        || opts.concurrency == 0
    {
        bail!("--devices, --broadcasts, --senders, --clients and --concurrency must be at least 1");
    }
    if u32::try_from(opts.broadcasts).is_err() {
        bail!("--broadcasts is too large");
    }
    if opts.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number");
    }
    if opts.topic.as_deref().is_some_and(str::is_empty) {
        bail!("--topic must not be empty");
    }
    let n = opts.devices as u64;
    if let (Some(limit), Some(open)) = (sys::open_files_limit(), sys::open_files()) {
        let api = (opts.clients + opts.senders) as u64;
        let need = open + n + api + FD_RESERVE;
        if need > limit {
            bail!(
                "{} devices need about {need} open files in this process but its limit \
                 (ulimit -n) is {limit}; at most about {} fit",
                opts.devices,
                limit.saturating_sub(open + api + FD_RESERVE)
            );
        }
    }
    Ok(())
}

fn describe(opts: &Options, connected: usize) -> String {
    format!(
        "sending {} broadcasts to {} ({connected} devices connected) {} over {} API connection(s)",
        opts.broadcasts,
        opts.topic
            .as_ref()
            .map_or_else(|| "all".to_owned(), |t| format!("topic {t}")),
        opts.rate
            .map_or_else(|| "flat out".to_owned(), |r| format!("at {r}/s")),
        opts.senders,
    )
}

/// `PATCH /v1/devices/{id}` `{"topics":[topic]}` for every device, over all `conns`.
async fn subscribe(
    endpoint: &Arc<Endpoint>,
    conns: Vec<ApiConn>,
    devices: &[Device],
    topic: &str,
    show: bool,
) -> anyhow::Result<()> {
    let body = Bytes::from(serde_json::to_vec(
        &serde_json::json!({ "topics": [topic] }),
    )?);
    let ids: Arc<Vec<String>> = Arc::new(devices.iter().map(|d| d.device_id.clone()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (ep, ids, next, body) = (
            Arc::clone(endpoint),
            Arc::clone(&ids),
            Arc::clone(&next),
            body.clone(),
        );
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { return Ok(()) };
                let path = format!("/v1/devices/{id}");
                let (status, reply) = conn
                    .send(Method::PATCH, &path, ep.api_auth(), body.clone())
                    .await?;
                if status != StatusCode::OK {
                    bail!(
                        "PATCH {path} answered {status}: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            }
        });
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => return Ok(()),
                Some(r) => r.context("subscription task")??,
            },
            _ = tick.tick() => {
                let done = next.load(Ordering::Relaxed).min(ids.len());
                progress(show, &format!(
                    "subscribed about {done}/{} ({:.0}/s)", ids.len(), rate(done, started.elapsed())
                ));
            }
        }
    }
}

/// Waits (bounded) until every device has connected or failed, with progress each second.
async fn wait_connected(shared: &Shared, n: usize, start: Instant, show: bool) {
    let deadline = start + CONNECT_PHASE_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_line = Instant::now();
    loop {
        tick.tick().await;
        let c = shared.connected.load(Ordering::Relaxed);
        let f = shared.connect_failed.load(Ordering::Relaxed);
        if c + f >= n {
            return;
        }
        if Instant::now() >= deadline {
            progress(
                show,
                "connect phase hit its time limit; going on with what is connected",
            );
            return;
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            progress(
                show,
                &format!(
                    "connected {c}/{n} ({:.0}/s), failed {f}",
                    rate(c, start.elapsed())
                ),
            );
        }
    }
}

/// The body of a broadcast, assembled per send around its stamp.
struct BodyTemplate {
    head: String,
    run_id: u32,
}

impl BodyTemplate {
    fn new(topic: Option<&str>, run_id: u32) -> Self {
        let to = match topic {
            Some(t) => serde_json::json!({ "topic": t }),
            None => serde_json::json!({ "all": true }),
        };
        Self {
            head: format!(r#"{{"to":{to},"data":{{"#),
            run_id,
        }
    }

    fn body(&self, t_ns: u64, index: usize) -> Bytes {
        let mut s = String::with_capacity(self.head.len() + 64);
        s.push_str(&self.head);
        let _ = write!(s, r#""t":{t_ns},"i":{index},"r":{}}}}}"#, self.run_id);
        Bytes::from(s)
    }
}

struct Sender {
    index: usize,
    conn: ApiConn,
    endpoint: Arc<Endpoint>,
    shared: Arc<Shared>,
    body: Arc<BodyTemplate>,
    /// Next broadcast index (flat out).
    next: Arc<AtomicUsize>,
    start: Instant,
    /// (senders, total rate) in rate mode: sender `i` sends broadcasts `i, i + K, …`,
    /// broadcast `j` due at `start + j / rate`.
    schedule: Option<(usize, f64)>,
}

struct SenderResult {
    api: Histogram<u64>,
    lag: Histogram<u64>,
    accepted: u64,
    errors: u64,
    first_error: Option<String>,
    last_done: Instant,
}

async fn sender(s: Sender) -> SenderResult {
    let Sender {
        index,
        mut conn,
        endpoint,
        shared,
        body,
        next,
        start,
        schedule,
    } = s;
    let mut out = SenderResult {
        api: histogram(),
        lag: histogram(),
        accepted: 0,
        errors: 0,
        first_error: None,
        last_done: start,
    };
    let mut mine = index;
    loop {
        let j = if let Some((k, r)) = schedule {
            let j = mine;
            mine += k;
            if j >= shared.broadcasts {
                break;
            }
            #[allow(clippy::cast_precision_loss)]
            let due = start + Duration::from_secs_f64(j as f64 / r);
            tokio::time::sleep_until(due.into()).await;
            record(&mut out.lag, Instant::now().saturating_duration_since(due));
            j
        } else {
            let j = next.fetch_add(1, Ordering::Relaxed);
            if j >= shared.broadcasts {
                break;
            }
            j
        };
        let t0 = Instant::now();
        let payload = body.body(since(shared.epoch, t0), j);
        let result = conn
            .post("/v1/messages", endpoint.api_auth(), payload)
            .await;
        let done = Instant::now();
        out.last_done = done;
        match result {
            Ok((status, _)) if status == StatusCode::ACCEPTED => {
                out.accepted += 1;
                shared.sent.fetch_add(1, Ordering::Relaxed);
                record(&mut out.api, done - t0);
            }
            Ok((status, reply)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!("{status}: {}", String::from_utf8_lossy(&reply))
                });
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                if conn.is_closed() {
                    match endpoint.api_conn().await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
        }
    }
    out
}

async fn collect_senders(
    mut senders: tokio::task::JoinSet<SenderResult>,
) -> anyhow::Result<SenderResult> {
    let mut total: Option<SenderResult> = None;
    while let Some(r) = senders.join_next().await {
        let s = r.context("sender task")?;
        match &mut total {
            None => total = Some(s),
            Some(t) => {
                merge(&mut t.api, &s.api);
                merge(&mut t.lag, &s.lag);
                t.accepted += s.accepted;
                t.errors += s.errors;
                t.first_error = t.first_error.take().or(s.first_error);
                t.last_done = t.last_done.max(s.last_done);
            }
        }
    }
    total.context("no sender ran")
}

/// Waits until `expected` frames arrived, or none arrived for `idle`, or [`DRAIN_LIMIT`].
async fn drain(shared: &Shared, expected: u64, idle: Duration, show: bool) {
    let started = Instant::now();
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while last < expected {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = shared.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= idle {
            progress(
                show,
                &format!(
                    "no delivery for {:.0} s; stopping with {} of {expected}",
                    idle.as_secs_f64(),
                    now
                ),
            );
            return;
        }
        if started.elapsed() >= DRAIN_LIMIT {
            progress(show, "delivery wait hit its time limit");
            return;
        }
    }
}

async fn report_progress(shared: Arc<Shared>, expected_max: u64, show: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let d = shared.delivered.load(Ordering::Relaxed);
        progress(
            show,
            &format!(
                "sent {}/{}, delivered {d}/{expected_max} ({}/s)",
                shared.sent.load(Ordering::Relaxed),
                shared.broadcasts,
                d - last,
            ),
        );
        last = d;
    }
}

struct DeviceTask {
    index: usize,
    endpoint: Arc<Endpoint>,
    token: String,
    local: Option<IpAddr>,
    sem: Arc<Semaphore>,
    stop: CancellationToken,
    shared: Arc<Shared>,
}

/// What one device saw.
#[derive(Default)]
struct DeviceResult {
    distinct: u64,
    /// Text frames that did not parse as this client expects.
    unparsed: u64,
    foreign: u64,
    ack_frames: u64,
    disconnected: bool,
    error: Option<String>,
}

/// Connects (at most `concurrency` handshakes at once), then reads and acks until stopped.
async fn device_task(d: DeviceTask) -> DeviceResult {
    let connect = LeanWs::connect(&d.endpoint, &d.token, d.local, READ_BUFFER);
    let attempt = limited(d.sem, CONNECT_TIMEOUT, connect).await;
    let ws = match attempt {
        Ok(ws) => ws,
        Err(e) => return connect_failed(&d.shared, e),
    };
    d.shared.connected.fetch_add(1, Ordering::Relaxed);
    receive(ws, d.index, &d.shared, &d.stop).await
}

fn connect_failed(shared: &Shared, error: String) -> DeviceResult {
    shared.connect_failed.fetch_add(1, Ordering::Relaxed);
    DeviceResult {
        error: Some(error),
        ..DeviceResult::default()
    }
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
    t: Option<u64>,
    i: Option<u32>,
    r: Option<u32>,
}

/// Per-device reading state, reused across batches.
struct Reader<'a> {
    shared: &'a Shared,
    /// Broadcasts of this run already read, one bit each.
    seen: Vec<u64>,
    /// Latencies (ns) of the batch being read.
    lat: Vec<u64>,
    /// The `ack` frame being built.
    ack: AckFrame,
    out: DeviceResult,
    received: u64,
    /// When the batch being read arrived (ns since the epoch): the frames of one batch were
    /// all readable at once, so one clock read serves them all.
    now: u64,
}

/// What the load generator needs of a `message` frame — its id and the stamp — read
/// straight from the layout the server writes (`{"type":"message","id":"…",…,"data":{…},…}`,
/// data keys in any order), so that parsing frames does not cost the generator the CPU it
/// shares with the server. `None` for any other frame; the caller then parses it with serde.
fn scan_message(text: &str) -> Option<(&str, Option<Stamp>)> {
    static DATA: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""data":{"#));
    let rest = text.strip_prefix(r#"{"type":"message","id":""#)?;
    let end = memchr::memchr(b'"', rest.as_bytes())?;
    let id = rest.get(..end)?;
    if id.contains('\\') {
        return None;
    }
    let rest = &rest.as_bytes()[end..];
    let stamp = DATA.find(rest).and_then(|at| {
        let data = &rest[at + 8..];
        Some(scan_stamp(&data[..memchr::memchr(b'}', data)?]))
    });
    Some((id, stamp))
}

/// The stamp in a `data` object's inside (`"k":digits` pairs, comma-separated), in one pass;
/// a pair of any other shape leaves its field unset.
fn scan_stamp(data: &[u8]) -> Stamp {
    let mut stamp = Stamp {
        t: None,
        i: None,
        r: None,
    };
    let mut at = 0;
    while at < data.len() {
        let pair = &data[at..];
        // `"k":` then 1 to 19 digits, then the end or a comma.
        let mut end = 4;
        let mut n = 0u64;
        if let [b'"', key, b'"', b':', ..] = *pair {
            while let Some(&d) = pair.get(end).filter(|d| d.is_ascii_digit()) {
                n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                end += 1;
            }
            if (5..=23).contains(&end) && matches!(pair.get(end), None | Some(b',')) {
                match key {
                    b't' => stamp.t = Some(n),
                    b'i' => stamp.i = u32::try_from(n).ok(),
                    b'r' => stamp.r = u32::try_from(n).ok(),
                    _ => {}
                }
                at += end + 1;
                continue;
            }
        }
        at += memchr::memchr(b',', pair).map_or(pair.len(), |c| c + 1);
    }
    stamp
}

impl Reader<'_> {
    fn on_text(&mut self, text: &str) {
        let now = self.now;
        let (id, data) = if let Some((id, data)) = scan_message(text) {
            (Some(id), data)
        } else {
            let Ok(frame) = serde_json::from_str::<Frame>(text) else {
                self.out.unparsed += 1;
                return;
            };
            if frame.kind != "message" {
                return;
            }
            (frame.id, frame.data)
        };
        if let Some(id) = id {
            self.ack.push(id);
        }
        let Some(Stamp {
            t: Some(t),
            i: Some(i),
            r: Some(r),
        }) = data
        else {
            self.out.foreign += 1;
            return;
        };
        let i = i as usize;
        if r != self.shared.run_id || i >= self.shared.broadcasts {
            self.out.foreign += 1;
            return;
        }
        self.received += 1;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.seen[word] & bit == 0 {
            self.seen[word] |= bit;
            self.out.distinct += 1;
        }
        self.lat.push(now.saturating_sub(t).max(1));
    }

    /// Publishes the batch's counts and latencies (one lock), then returns the ack frame
    /// to send, if any.
    fn end_batch(&mut self, shard: usize) -> Option<&str> {
        if !self.lat.is_empty() {
            let now = since(self.shared.epoch, Instant::now());
            self.shared
                .delivered
                .fetch_add(self.received, Ordering::Relaxed);
            self.shared
                .last_delivery_ns
                .fetch_max(now, Ordering::Relaxed);
            if let Ok(mut h) = self.shared.shards[shard].lock() {
                for &ns in &self.lat {
                    h.saturating_record(ns);
                }
            }
            self.lat.clear();
            self.received = 0;
        }
        let frame = self.ack.finish()?;
        self.out.ack_frames += 1;
        Some(frame)
    }
}

/// Reads frames until stopped: waits for bytes, takes every whole frame read and whatever
/// more is readable at once (up to [`ACK_BATCH`] messages), and acks them in one frame.
async fn receive(
    mut ws: LeanWs,
    index: usize,
    shared: &Shared,
    stop: &CancellationToken,
) -> DeviceResult {
    let shard = index % SHARDS;
    let mut r = Reader {
        shared,
        seen: vec![0; shared.broadcasts.div_ceil(64)],
        lat: Vec::with_capacity(64),
        ack: AckFrame::default(),
        out: DeviceResult::default(),
        received: 0,
        now: since(shared.epoch, Instant::now()),
    };
    'outer: loop {
        loop {
            match ws.buffered() {
                Ok(Some(WsFrame::Text(range))) => {
                    match ws.text(range) {
                        Ok(text) => r.on_text(text),
                        Err(_) => r.out.unparsed += 1,
                    }
                    if r.ack.len() >= ACK_BATCH {
                        break;
                    }
                }
                Ok(Some(WsFrame::Control)) => {}
                Ok(Some(WsFrame::Close)) | Err(_) => {
                    r.end_batch(shard);
                    r.out.disconnected = true;
                    break 'outer;
                }
                Ok(None) if r.ack.is_empty() && !ws.has_queued() => {
                    // Nothing taken yet: wait for the next bytes.
                    let got = tokio::select! {
                        biased;
                        () = stop.cancelled() => break 'outer,
                        got = ws.fill() => got,
                    };
                    if !matches!(got, Ok(true)) {
                        r.out.disconnected = true;
                        break 'outer;
                    }
                    r.now = since(shared.epoch, Instant::now());
                }
                Ok(None) => match ws.fill().now_or_never() {
                    Some(Ok(true)) => {}
                    Some(Ok(false) | Err(_)) => {
                        r.end_batch(shard);
                        r.out.disconnected = true;
                        break 'outer;
                    }
                    None => break,
                },
            }
        }
        if let Some(frame) = r.end_batch(shard) {
            ws.queue_text(frame.as_bytes());
        }
        if ws.has_queued() && ws.flush().await.is_err() {
            r.out.disconnected = true;
            break;
        }
    }
    if !r.out.disconnected {
        ws.close().await;
    }
    r.out
}

/// Totals over the devices.
struct DevicesOut {
    distinct: u64,
    unparsed: u64,
    foreign: u64,
    ack_frames: u64,
    disconnects: u64,
    first_error: Option<String>,
}

/// Waits (at most 60 s) for every device task after `stop`.
async fn finish_devices(mut tasks: tokio::task::JoinSet<DeviceResult>) -> DevicesOut {
    let mut out = DevicesOut {
        distinct: 0,
        unparsed: 0,
        foreign: 0,
        ack_frames: 0,
        disconnects: 0,
        first_error: None,
    };
    let collecting = async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(d) => {
                    out.distinct += d.distinct;
                    out.unparsed += d.unparsed;
                    out.foreign += d.foreign;
                    out.ack_frames += d.ack_frames;
                    out.disconnects += u64::from(d.disconnected);
                    if out.first_error.is_none() {
                        out.first_error = d.error;
                    }
                }
                Err(e) => {
                    out.first_error.get_or_insert(format!("device task: {e}"));
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), collecting)
        .await
        .is_err()
    {
        progress(true, "some device connections did not close within 60 s");
    }
    out
}

impl Report {
    /// The human-readable form.
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mode = self
            .target_rate
            .map_or_else(|| "flat out".to_owned(), |r| format!("at {r:.0}/s"));
        let _ = writeln!(
            s,
            "fanout: {} broadcasts to {}, {} of {} devices connected ({} failed), {mode}, {} sender(s)",
            self.broadcasts, self.target, self.connected, self.devices, self.connect_failed, self.senders
        );
        if let Some(e) = &self.first_connect_error {
            let _ = writeln!(s, "  connect error   {e}");
        }
        let _ = writeln!(
            s,
            "  setup           registered in {:.1} s{}, connected in {:.1} s ({:.0}/s) from {} source address(es)",
            self.register_s,
            self.subscribe_s
                .map(|t| format!(", subscribed in {t:.1} s"))
                .unwrap_or_default(),
            self.connect_s,
            self.connects_per_s,
            self.source_addresses.max(1)
        );
        let _ = writeln!(
            s,
            "  sent            {} accepted, {} errors, in {:.3} s",
            self.accepted, self.send_errors, self.send_s
        );
        if let Some(e) = &self.first_send_error {
            let _ = writeln!(s, "  send error      {e}");
        }
        let _ = writeln!(
            s,
            "  delivered       {} of {} expected in {:.3} s: {:.0} deliveries/s",
            self.delivered, self.expected, self.delivery_s, self.deliveries_per_s
        );
        let _ = writeln!(
            s,
            "                  missing {}, duplicates {}, foreign {}, unparsed {}, device disconnects {}, ack frames {}",
            self.missing,
            self.duplicates,
            self.foreign,
            self.unparsed,
            self.device_disconnects,
            self.ack_frames
        );
        let _ = writeln!(s, "  send → receipt  {}", self.latency.line());
        let _ = writeln!(s, "  API latency     {}", self.api_latency.line());
        if let Some(lag) = &self.schedule_lag {
            let _ = writeln!(s, "  schedule lag    {}", lag.line());
        }
        if let Some(held) = self.rate_held.filter(|h| *h < 0.95) {
            let _ = writeln!(
                s,
                "  warning         only {:.0} % of the target rate was sent",
                held * 100.0
            );
        }
        if let Some(c) = self.client_cpu_cores {
            let _ = write!(s, "  CPU             client {c:.2} cores");
            if let Some(sv) = self.server_cpu_cores {
                let _ = write!(s, ", server {sv:.2} cores");
            }
            if let Some(us) = self.server_cpu_us_per_delivery {
                let _ = write!(s, "; server {us:.2} µs per delivery (acks included)");
            }
            if let Some(pct) = self.machine_steal_pct {
                let _ = write!(s, "; stolen by the host {pct:.1} %");
            }
            let _ = writeln!(s);
        }
        if let Some(rss) = self.server_rss_kib {
            let _ = writeln!(s, "  server RSS      {rss} KiB");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::protocol::ClientFrame;

    fn shared(broadcasts: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            run_id: 7,
            broadcasts,
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }

    fn message(id: &str, data: &str) -> String {
        format!(r#"{{"type":"message","id":"{id}","seq":1,"data":{data},"sent_at":"x"}}"#)
    }

    #[test]
    fn the_scanner_reads_what_serde_reads() {
        let frames = [
            r#"{"type":"message","id":"msg_a","seq":3,"data":{"i":2,"r":7,"t":99},"priority":"normal","sent_at":"x"}"#,
            r#"{"type":"message","id":"msg_b","seq":4,"data":{"t":1},"sent_at":"x"}"#,
            r#"{"type":"message","id":"msg_c","seq":5,"notification":{"title":"hi"},"sent_at":"x"}"#,
            r#"{"type":"message","id":"msg_d","seq":6,"data":{"x":"a,b","i":4,"tt":5,"t":123},"sent_at":"x"}"#,
            r#"{"type":"message","id":"msg_e","seq":7,"data":{"i":4294967295,"r":8,"t":1234567890123456789},"sent_at":"x"}"#,
        ];
        for text in frames {
            let (id, stamp) = scan_message(text).expect("a message frame");
            let frame: Frame = serde_json::from_str(text).unwrap();
            assert_eq!(Some(id), frame.id, "{text}");
            let key = |s: Option<Stamp>| s.map(|s| (s.t, s.i, s.r));
            assert_eq!(key(stamp), key(frame.data), "{text}");
        }
        assert!(scan_message(r#"{"type":"gap","dropped":1}"#).is_none());
        assert!(scan_message(r#"{"type":"message","id":"a\"b"}"#).is_none());
        assert!(scan_message("not json").is_none());
    }

    #[test]
    fn bodies_are_valid_pushes() {
        let all: serde_json::Value =
            serde_json::from_slice(&BodyTemplate::new(None, 7).body(12, 3)).unwrap();
        assert_eq!(
            all,
            serde_json::json!({"to": {"all": true}, "data": {"t": 12, "i": 3, "r": 7}})
        );
        let topic: serde_json::Value =
            serde_json::from_slice(&BodyTemplate::new(Some("a\"b"), 7).body(1, 0)).unwrap();
        assert_eq!(topic["to"]["topic"], "a\"b");
    }

    #[test]
    fn a_batch_is_counted_once_and_acked_in_one_frame_the_server_accepts() {
        let shared = shared(3);
        let mut r = Reader {
            shared: &shared,
            seen: vec![0; 1],
            lat: Vec::new(),
            ack: AckFrame::default(),
            out: DeviceResult::default(),
            received: 0,
            now: 2,
        };
        r.on_text(&message("msg_a", r#"{"t":1,"i":0,"r":7}"#));
        r.on_text(&message("msg_b", r#"{"t":1,"i":2,"r":7}"#));
        r.on_text(&message("msg_c", r#"{"t":1,"i":2,"r":7}"#)); // duplicate index
        r.on_text(&message("msg_d", r#"{"t":1,"i":0,"r":8}"#)); // another run
        r.on_text(r#"{"type":"gap","dropped":1}"#);
        r.on_text("not json");
        let frame = r.end_batch(0).expect("an ack frame");
        assert_eq!(
            ClientFrame::parse(frame),
            Ok(ClientFrame::Ack {
                ids: ["msg_a", "msg_b", "msg_c", "msg_d"].into_iter().collect()
            })
        );
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 3);
        assert_eq!(
            (
                r.out.distinct,
                r.out.foreign,
                r.out.unparsed,
                r.out.ack_frames
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(shared.shards[0].lock().unwrap().len(), 3);
        assert!(r.end_batch(0).is_none(), "nothing new, no ack");
    }
}
