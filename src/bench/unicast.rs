//! `unicast`: `D` connected devices, `K` API clients pushing to random devices, flat out or
//! at a fixed total rate. Measures accepted pushes per second, API latency (request to
//! reply) and end-to-end latency (just before the API call to the device reading the frame;
//! the send instant rides in the message's `data.t`, so the frame correlates itself).
//!
//! Every device acknowledges every message (one `ack` frame for all frames already read).
//! With `offline`, the devices are registered and never connect: every accepted push waits
//! in its device's mailbox, so the run measures the store-and-forward intake alone (the API,
//! the durable commit), with no delivery work on either side.
//! In rate mode each client sends on its own schedule (`K / rate` apart, staggered); the
//! delay between a send's due time and its start is reported as `schedule_lag`, so a client
//! that cannot keep up is visible rather than silently lowering the rate.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::by_second::{self, BySecond, SecondTail};
use super::net::{close_ws, Device, DeviceWs, Endpoint};
use super::stats::{histogram, merge, record, round3, Summary};
use super::{open_api_conns, progress, register_devices, sys, ApiConn};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Devices registered and connected.
    pub devices: usize,
    /// Concurrent API clients, each with one request in flight.
    pub clients: usize,
    /// API connections the clients share (HTTP/2 only below `clients`); `None`: one each.
    pub connections: Option<usize>,
    /// Measured time (after the warm-up).
    pub duration: Duration,
    /// Time pushed but not measured, first.
    pub warmup: Duration,
    /// Total pushes per second across all clients; `None`: flat out.
    pub rate: Option<f64>,
    /// Pushes per request: 1 sends `POST /v1/messages`; more sends `POST /v1/messages/batch`
    /// with that many pushes, each to a random device.
    pub batch: usize,
    /// Register the devices but never connect them: pushes are stored, not delivered.
    pub offline: bool,
    /// Server process to read CPU time and memory of.
    pub server_pid: Option<u32>,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Options {
    fn describe(&self) -> String {
        format!(
            "pushing for {:.0} s (+{:.0} s warm-up) {}",
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64(),
            self.rate
                .map_or_else(|| "flat out".to_owned(), |r| format!("at {r:.0}/s")),
        )
    }
}

/// The outcome, in the shape `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub http: &'static str,
    pub devices: usize,
    pub clients: usize,
    /// TCP+TLS connections the clients' requests travel on.
    pub api_connections: usize,
    /// Pushes per API request.
    pub batch: usize,
    pub mode: &'static str,
    /// The devices never connected: every accepted push is stored for later, none delivered.
    pub offline: bool,
    pub target_rate: Option<f64>,
    /// Measured window in seconds (warm-up excluded).
    pub duration_s: f64,
    /// 202 answers to pushes started in the measured window.
    pub accepted: u64,
    pub accepted_per_s: f64,
    /// Non-202 answers and transport failures (whole run).
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// 202 answers over the whole run (warm-up included).
    pub accepted_total: u64,
    /// Message frames devices read over the whole run.
    pub delivered_total: u64,
    /// Accepted but not seen by a device when the run ended (after a drain of up to 5 s);
    /// 0 when offline.
    pub missing: u64,
    pub device_disconnects: u64,
    pub api_latency: Summary,
    pub e2e_latency: Summary,
    /// End-to-end latency by second of the measured window (by send time), coarse: how the
    /// slow deliveries are spread over the run (see `bench::by_second`).
    pub e2e_by_second: Vec<SecondTail>,
    /// Percent of the machine's CPU time the hypervisor took for others over the measured
    /// window (`steal` in `/proc/stat`; 0 on bare metal, `None` where unreadable).
    pub machine_steal_pct: Option<f64>,
    pub schedule_lag: Option<Summary>,
    /// In rate mode, accepted/s over the target: below ~0.95 the generator fell behind (the
    /// server did not keep up), and latencies measured from each actual send understate what
    /// a caller at that rate would see (coordinated omission); `schedule_lag` shows by how much.
    pub rate_held: Option<f64>,
    /// Average cores busy during the push phase.
    pub client_cpu_cores: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    /// Server CPU time over the push phase (warm-up included) per push accepted in it: the
    /// steadier figure when the box is shared. Includes the devices' acks and connections.
    pub server_cpu_us_per_push: Option<f64>,
    /// Of that, the store writer thread's (`warbler-writer`) share.
    pub writer_cpu_us_per_push: Option<f64>,
    pub server_rss_kib: Option<u64>,
}

struct Shared {
    epoch: Instant,
    /// Frames stamped before this (ns since `epoch`) are warm-up: not recorded.
    warm_ns: u64,
    /// End-to-end latency by second of the window and the drain after it, with the
    /// machine's stolen CPU by second.
    e2e_seconds: BySecond,
    /// The machine's CPU ticks (total, stolen) when the window began.
    window_ticks: std::sync::OnceLock<(u64, u64)>,
    accepted: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
}

fn since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Runs the scenario.
///
/// `clients` handles over `conns`, spread evenly: the connections themselves when there are
/// as many, else HTTP/2 handles that share them.
fn shared_conns(conns: Vec<ApiConn>, clients: usize) -> anyhow::Result<Vec<ApiConn>> {
    if conns.len() >= clients {
        return Ok(conns);
    }
    let mut out = Vec::with_capacity(clients);
    for i in 0..clients {
        let handle = conns[i % conns.len()].share().ok_or_else(|| {
            anyhow::anyhow!("--connections below --clients needs HTTP/2 (--http2) to share them")
        })?;
        out.push(handle);
    }
    Ok(out)
}

/// # Errors
/// Setup failures: no connection, a refused registration or WebSocket.
pub async fn run(endpoint: Arc<Endpoint>, opts: Options) -> anyhow::Result<Report> {
    if opts.devices == 0 || opts.clients == 0 {
        bail!("--devices and --clients must be at least 1");
    }
    if !(1..=MAX_BATCH).contains(&opts.batch) {
        bail!("--batch must be 1 to {MAX_BATCH}");
    }
    if opts.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number");
    }
    let show = opts.progress;
    let n_conns = opts.connections.unwrap_or(opts.clients);
    if n_conns == 0 || n_conns > opts.clients {
        bail!("--connections must be 1 to --clients ({})", opts.clients);
    }
    progress(show, &format!("opening {n_conns} API connections"));
    let conns = shared_conns(open_api_conns(&endpoint, n_conns).await?, opts.clients)?;
    let http = conns[0].version().label();
    progress(show, &format!("registering {} devices", opts.devices));
    let (devices, conns) = register_devices(&endpoint, conns, opts.devices, show).await?;

    let sockets = if opts.offline {
        Vec::new()
    } else {
        progress(show, &format!("connecting {} devices", opts.devices));
        connect_devices(&endpoint, &devices).await?
    };

    let epoch = Instant::now();
    let warm_end = epoch + opts.warmup;
    let end = warm_end + opts.duration;
    let shared = Arc::new(Shared {
        epoch,
        warm_ns: since(epoch, warm_end),
        e2e_seconds: BySecond::new(
            usize::try_from(opts.duration.as_secs())
                .unwrap_or(usize::MAX)
                .saturating_add(DRAIN_SECONDS + 1)
                .min(MAX_SECONDS),
        ),
        window_ticks: std::sync::OnceLock::new(),
        accepted: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let mut receivers = tokio::task::JoinSet::new();
    for ws in sockets {
        receivers.spawn(device_loop(ws, Arc::clone(&shared), stop.clone()));
    }

    let client_cpu0 = sys::cpu_seconds(None);
    let server_cpu0 = opts.server_pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let writer_cpu0 = opts
        .server_pid
        .and_then(|p| sys::thread_cpu_seconds(p, WRITER_THREAD));
    progress(show, &opts.describe());
    let ids: Arc<Vec<String>> = Arc::new(devices.into_iter().map(|d| d.device_id).collect());
    let mut workers = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        workers.spawn(push_worker(Worker {
            seed: i as u64,
            conn,
            endpoint: Arc::clone(&endpoint),
            shared: Arc::clone(&shared),
            devices: Arc::clone(&ids),
            warm_end,
            end,
            // The rate is in pushes; a client sends requests of `batch` pushes.
            #[allow(clippy::cast_precision_loss)]
            schedule: opts
                .rate
                .map(|r| schedule(r / opts.batch as f64, opts.clients, i)),
            batch: opts.batch,
        }));
    }
    let ticker = tokio::spawn(report_progress(Arc::clone(&shared), show));
    let steal_sampler = tokio::spawn(sample_steal(Arc::clone(&shared), warm_end));

    let totals = collect(workers, warm_end).await?;
    let machine_steal_pct = shared
        .window_ticks
        .get()
        .and_then(|t0| sys::steal_pct(*t0, sys::machine_ticks()?));
    let client_cpu = cores_busy(None, client_cpu0, epoch);
    let server_cpu = opts
        .server_pid
        .and_then(|p| cores_busy(Some(p), server_cpu0, epoch));
    let pushed = shared.accepted.load(Ordering::Relaxed);
    let server_cpu_us_per_push = opts
        .server_pid
        .and_then(|p| per_push_us(sys::cpu_seconds(Some(p))? - server_cpu0?, pushed));
    let writer_cpu_us_per_push = opts.server_pid.and_then(|p| {
        per_push_us(
            sys::thread_cpu_seconds(p, WRITER_THREAD)? - writer_cpu0?,
            pushed,
        )
    });

    let (e2e, device_disconnects) = if opts.offline {
        (histogram(), 0)
    } else {
        drain(&shared, receivers, &stop).await?
    };
    ticker.abort();
    steal_sampler.abort();
    let server_rss_kib = opts.server_pid.and_then(sys::vm_rss_kib);

    let window = totals.last_done.saturating_duration_since(warm_end);
    let accepted_total = shared.accepted.load(Ordering::Relaxed);
    let delivered_total = shared.delivered.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let accepted_per_s = if window.is_zero() {
        0.0
    } else {
        (totals.accepted as f64 / window.as_secs_f64()).round()
    };
    Ok(Report {
        scenario: "unicast",
        http,
        devices: opts.devices,
        clients: opts.clients,
        api_connections: n_conns,
        batch: opts.batch,
        mode: if opts.rate.is_some() {
            "rate"
        } else {
            "flat-out"
        },
        offline: opts.offline,
        target_rate: opts.rate,
        duration_s: round3(window.as_secs_f64()),
        accepted: totals.accepted,
        accepted_per_s,
        errors: shared.errors.load(Ordering::Relaxed),
        error_kinds: totals.error_kinds,
        first_error: totals.first_error,
        accepted_total,
        delivered_total,
        missing: if opts.offline {
            0
        } else {
            accepted_total.saturating_sub(delivered_total)
        },
        device_disconnects,
        api_latency: Summary::of(&totals.api),
        e2e_latency: Summary::of(&e2e),
        e2e_by_second: shared.e2e_seconds.report(),
        machine_steal_pct,
        schedule_lag: opts.rate.map(|_| Summary::of(&totals.lag)),
        rate_held: opts.rate.map(|r| round3(accepted_per_s / r)),
        client_cpu_cores: client_cpu,
        server_cpu_cores: server_cpu,
        server_cpu_us_per_push,
        writer_cpu_us_per_push,
        server_rss_kib,
    })
}

async fn connect_devices(
    endpoint: &Arc<Endpoint>,
    devices: &[Device],
) -> anyhow::Result<Vec<DeviceWs>> {
    let mut connecting = tokio::task::JoinSet::new();
    for d in devices {
        let ep = Arc::clone(endpoint);
        let token = d.token.clone();
        connecting.spawn(async move { ep.device_ws(&token, None, 64 * 1024).await });
    }
    let mut sockets = Vec::with_capacity(devices.len());
    while let Some(r) = connecting.join_next().await {
        sockets.push(r.context("connect task")?.context("device connection")?);
    }
    Ok(sockets)
}

/// Average cores a process (this one with `None`) kept busy since `since`, given its CPU
/// seconds then.
fn cores_busy(pid: Option<u32>, cpu_then: Option<f64>, since: Instant) -> Option<f64> {
    let now = sys::cpu_seconds(pid)?;
    Some(round3((now - cpu_then?) / since.elapsed().as_secs_f64()))
}

/// The server thread that commits every write (named in `store::writer`).
const WRITER_THREAD: &str = "warbler-writer";

/// CPU seconds per push, in µs, rounded to 0.1.
#[allow(clippy::cast_precision_loss)] // push counts stay far below 2^52
fn per_push_us(cpu_seconds: f64, pushes: u64) -> Option<f64> {
    (pushes > 0).then(|| (cpu_seconds / pushes as f64 * 10_000_000.0).round() / 10.0)
}

/// Client `i` of `k` at a total of `rate`/s: (interval, offset of its first send).
#[allow(clippy::cast_precision_loss)]
fn schedule(rate: f64, k: usize, i: usize) -> (Duration, Duration) {
    let k = k as f64;
    let interval = Duration::from_secs_f64(k / rate);
    (interval, interval.mul_f64(i as f64 / k))
}

/// Lets what was accepted arrive (up to 5 s more), then stops the devices; returns the
/// merged end-to-end histogram and how many devices the server disconnected.
async fn drain(
    shared: &Shared,
    mut receivers: tokio::task::JoinSet<(Histogram<u64>, bool)>,
    stop: &CancellationToken,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let drain_until = Instant::now() + Duration::from_secs(DRAIN_SECONDS as u64);
    while shared.delivered.load(Ordering::Relaxed) < shared.accepted.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let mut e2e = histogram();
    let mut disconnects = 0;
    while let Some(r) = receivers.join_next().await {
        let (h, disconnected) = r.context("device task")?;
        merge(&mut e2e, &h);
        disconnects += u64::from(disconnected);
    }
    Ok((e2e, disconnects))
}

struct Totals {
    api: Histogram<u64>,
    lag: Histogram<u64>,
    accepted: u64,
    error_kinds: BTreeMap<String, u64>,
    first_error: Option<String>,
    last_done: Instant,
}

async fn collect(
    mut workers: tokio::task::JoinSet<WorkerResult>,
    warm_end: Instant,
) -> anyhow::Result<Totals> {
    let mut t = Totals {
        api: histogram(),
        lag: histogram(),
        accepted: 0,
        error_kinds: BTreeMap::new(),
        first_error: None,
        last_done: warm_end,
    };
    while let Some(r) = workers.join_next().await {
        let w = r.context("push task")?;
        merge(&mut t.api, &w.api);
        merge(&mut t.lag, &w.lag);
        t.accepted += w.accepted;
        for (k, v) in w.errors {
            *t.error_kinds.entry(k).or_insert(0) += v;
        }
        t.first_error = t.first_error.or(w.first_error);
        t.last_done = t.last_done.max(w.last_done);
    }
    Ok(t)
}

/// From `warm_end` on, notes each second's stolen CPU in the by-second series.
async fn sample_steal(shared: Arc<Shared>, warm_end: Instant) {
    tokio::time::sleep_until(warm_end.into()).await;
    let Some(mut last) = sys::machine_ticks() else {
        return;
    };
    let _ = shared.window_ticks.set(last);
    let mut tick = tokio::time::interval_at(
        (warm_end + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let at = tick.tick().await;
        let Some(now) = sys::machine_ticks() else {
            return;
        };
        // The tick at `warm_end + k + 1` s closes second `k`.
        let second = at.into_std().saturating_duration_since(warm_end).as_secs();
        if let (Some(pct), Some(k)) = (sys::steal_pct(last, now), second.checked_sub(1)) {
            shared
                .e2e_seconds
                .note_steal(usize::try_from(k).unwrap_or(usize::MAX), pct);
        }
        last = now;
    }
}

async fn report_progress(shared: Arc<Shared>, show: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let a = shared.accepted.load(Ordering::Relaxed);
        progress(
            show,
            &format!(
                "t={:.0}s accepted {a} ({}/s) delivered {} errors {}",
                shared.epoch.elapsed().as_secs_f64(),
                a - last,
                shared.delivered.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed),
            ),
        );
        last = a;
    }
}

struct Worker {
    seed: u64,
    conn: ApiConn,
    endpoint: Arc<Endpoint>,
    shared: Arc<Shared>,
    devices: Arc<Vec<String>>,
    warm_end: Instant,
    end: Instant,
    /// (interval, offset of the first send) in rate mode.
    schedule: Option<(Duration, Duration)>,
    batch: usize,
}

/// Most pushes in one batch request (the server's bound).
const MAX_BATCH: usize = crate::api::MAX_BATCH;

/// The bench push for `device`, stamped with the send instant.
fn push_body(out: &mut String, device: &str, t_ns: u64) {
    let _ = write!(
        out,
        r#"{{"to":{{"device":"{device}"}},"notification":{{"title":"bench","body":"warbler bench push"}},"data":{{"t":{t_ns}}}}}"#,
    );
}

/// The `accepted` count of a batch answer.
#[derive(Deserialize)]
struct BatchReply {
    accepted: u64,
}

struct WorkerResult {
    api: Histogram<u64>,
    lag: Histogram<u64>,
    accepted: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    last_done: Instant,
}

async fn push_worker(w: Worker) -> WorkerResult {
    let Worker {
        seed,
        mut conn,
        endpoint,
        shared,
        devices,
        warm_end,
        end,
        schedule,
        batch,
    } = w;
    let path = if batch == 1 {
        "/v1/messages"
    } else {
        "/v1/messages/batch"
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = WorkerResult {
        api: histogram(),
        lag: histogram(),
        accepted: 0,
        errors: BTreeMap::new(),
        first_error: None,
        last_done: warm_end,
    };
    let start = shared.epoch;
    let mut n: u32 = 0;
    let mut body = String::with_capacity(256);
    loop {
        if let Some((interval, offset)) = schedule {
            let due = start + offset + interval * n;
            n = n.saturating_add(1);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            if due >= warm_end {
                record(&mut out.lag, Instant::now().saturating_duration_since(due));
            }
        } else if Instant::now() >= end {
            break;
        }
        let t0 = Instant::now();
        let t_ns = since(start, t0);
        body.clear();
        if batch == 1 {
            push_body(
                &mut body,
                &devices[rng.random_range(0..devices.len())],
                t_ns,
            );
        } else {
            body.push_str(r#"{"messages":["#);
            for j in 0..batch {
                if j > 0 {
                    body.push(',');
                }
                push_body(
                    &mut body,
                    &devices[rng.random_range(0..devices.len())],
                    t_ns,
                );
            }
            body.push_str("]}");
        }
        let result = conn
            .post(path, endpoint.api_auth(), body.clone().into())
            .await;
        let done = Instant::now();
        out.last_done = out.last_done.max(done);
        match result {
            Ok((status, reply)) if status == hyper::StatusCode::ACCEPTED => {
                let pushed = if batch == 1 {
                    1
                } else {
                    serde_json::from_slice::<BatchReply>(&reply).map_or(0, |r| r.accepted)
                };
                let refused = batch as u64 - pushed;
                if refused > 0 {
                    shared.errors.fetch_add(refused, Ordering::Relaxed);
                    *out.errors.entry("batch item".into()).or_insert(0) += refused;
                    out.first_error.get_or_insert_with(|| {
                        format!("batch item refused: {}", String::from_utf8_lossy(&reply))
                    });
                }
                shared.accepted.fetch_add(pushed, Ordering::Relaxed);
                if t0 >= warm_end {
                    out.accepted += pushed;
                    record(&mut out.api, done - t0);
                }
            }
            Ok((status, reply)) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                *out.errors.entry(status.as_u16().to_string()).or_insert(0) += 1;
                out.first_error.get_or_insert_with(|| {
                    format!("{status}: {}", String::from_utf8_lossy(&reply))
                });
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                *out.errors.entry("transport".into()).or_insert(0) += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                if conn.is_closed() {
                    // Reconnect, bounded by the run's end.
                    loop {
                        match endpoint.api_conn().await {
                            Ok(c) => {
                                conn = c;
                                break;
                            }
                            Err(_) if Instant::now() < end => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(_) => return out,
                        }
                    }
                }
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    data: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    t: Option<u64>,
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ids: &'a [String],
}

/// Longest wait, after the window, for accepted pushes to arrive.
const DRAIN_SECONDS: usize = 5;
/// Most seconds a by-second series keeps (a day); later samples count in the last.
const MAX_SECONDS: usize = 86_400;

/// Most ids in one ack frame (the server allows 1,000).
const ACK_BATCH: usize = 500;

/// Reads frames until stopped, recording end-to-end latency and acking every message.
/// Returns the histogram and whether the server closed the connection first.
async fn device_loop(
    mut ws: DeviceWs,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> (Histogram<u64>, bool) {
    let mut e2e = histogram();
    let mut ids: Vec<String> = Vec::with_capacity(64);
    let mut disconnected = false;
    'outer: loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let Some(Ok(msg)) = first else {
            disconnected = true;
            break;
        };
        on_message(&msg, &shared, &mut e2e, &mut ids);
        // Take whatever else is already readable, then ack it all in one frame.
        while ids.len() < ACK_BATCH {
            match ws.next().now_or_never() {
                Some(Some(Ok(msg))) => on_message(&msg, &shared, &mut e2e, &mut ids),
                Some(Some(Err(_)) | None) => {
                    disconnected = true;
                    break 'outer;
                }
                None => break,
            }
        }
        if !ids.is_empty() {
            let frame = serde_json::to_string(&Ack {
                kind: "ack",
                ids: &ids,
            })
            .unwrap_or_default();
            ids.clear();
            if ws.send(Message::Text(frame.into())).await.is_err() {
                disconnected = true;
                break;
            }
        }
    }
    if !disconnected {
        close_ws(ws).await;
    }
    (e2e, disconnected)
}

fn on_message(msg: &Message, shared: &Shared, e2e: &mut Histogram<u64>, ids: &mut Vec<String>) {
    let Message::Text(text) = msg else { return };
    let now = since(shared.epoch, Instant::now());
    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
        return;
    };
    if frame.kind != "message" {
        return;
    }
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    if let Some(t) = frame.data.and_then(|d| d.t) {
        if t >= shared.warm_ns {
            let took = now.saturating_sub(t).max(1);
            e2e.saturating_record(took);
            shared.e2e_seconds.record(t - shared.warm_ns, took);
        }
    }
    if let Some(id) = frame.id {
        ids.push(id.into_owned());
    }
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
            "unicast: {} devices, {} API clients on {} connections ({}), {}, {mode}, {:.1} s measured",
            self.devices,
            self.clients,
            self.api_connections,
            self.http,
            if self.batch == 1 {
                "one push per request".to_owned()
            } else {
                format!("batches of {}", self.batch)
            },
            self.duration_s
        );
        let _ = writeln!(
            s,
            "  accepted      {} ({:.0}/s), errors {}",
            self.accepted, self.accepted_per_s, self.errors
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "  first error   {e}  (by kind: {:?})", self.error_kinds);
        }
        if self.offline {
            let _ = writeln!(
                s,
                "  delivered     none: the devices stayed offline, so all {} accepted wait in their mailboxes",
                self.accepted_total
            );
        } else {
            let _ = writeln!(
                s,
                "  delivered     {} of {} accepted in the whole run (missing {}, device disconnects {})",
                self.delivered_total, self.accepted_total, self.missing, self.device_disconnects
            );
        }
        let _ = writeln!(s, "  API latency   {}", self.api_latency.line());
        if !self.offline {
            let _ = writeln!(s, "  end to end    {}", self.e2e_latency.line());
            if let Some(line) = by_second::line(&self.e2e_by_second) {
                let _ = writeln!(s, "                {line}");
            }
        }
        if let Some(lag) = &self.schedule_lag {
            let _ = writeln!(s, "  schedule lag  {}", lag.line());
        }
        if let Some(held) = self.rate_held.filter(|h| *h < 0.95) {
            let _ = writeln!(
                s,
                "  warning       only {:.0} % of the target rate was reached: the server fell \
                 behind and the latencies above understate a caller's wait",
                held * 100.0
            );
        }
        if let Some(c) = self.client_cpu_cores {
            let _ = write!(s, "  CPU           client {c:.2} cores");
            if let Some(sv) = self.server_cpu_cores {
                let _ = write!(s, ", server {sv:.2} cores");
            }
            if let Some(us) = self.server_cpu_us_per_push {
                let _ = write!(s, "; server {us:.1} µs per push");
            }
            if let Some(us) = self.writer_cpu_us_per_push {
                let _ = write!(s, " (store writer {us:.1})");
            }
            if let Some(pct) = self.machine_steal_pct {
                let _ = write!(s, "; stolen by the host {pct:.1} %");
            }
            let _ = writeln!(s);
        }
        if let Some(rss) = self.server_rss_kib {
            let _ = writeln!(s, "  server RSS    {rss} KiB");
        }
        s
    }
}
