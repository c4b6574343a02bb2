//! 1 → N fan-out: `N` subscribers on one channel / topic / subject, `M` broadcasts sent
//! flat out; deliveries/s = broadcasts received by all subscribers ÷ (last receipt − first
//! send), and publish → receive latency from a send instant carried in the payload.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::connections::check_capacity;
use crate::net::source_for;
use crate::peer::{Kind, Target};
use crate::stats::{Shared, Summary};
use crate::sys::{cpu_seconds, vm_rss_kib};
use crate::{mqtt, nats, progress, pusher};

/// The fan-out channel / topic / subject.
const TOPIC: &str = "bench";
/// Longest a run waits for deliveries after the last send, whatever `--drain-idle` says.
const DRAIN_MAX: Duration = Duration::from_secs(300);

pub struct Options {
    pub devices: usize,
    pub broadcasts: usize,
    pub senders: usize,
    pub sources: u8,
    pub concurrency: usize,
    pub drain_idle: Duration,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub peer: &'static str,
    pub transport: &'static str,
    pub publish: &'static str,
    pub acked: bool,
    pub devices: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub broadcasts: usize,
    pub accepted: usize,
    pub senders: usize,
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub foreign: u64,
    pub device_disconnects: usize,
    pub send_s: f64,
    pub delivery_s: f64,
    pub deliveries_per_s: f64,
    pub latency: Summary,
    pub server_cpu_cores: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub client_cpu_cores: Option<f64>,
    pub server_rss_kib: Option<u64>,
}

/// What every subscriber task adds to.
struct Tally {
    epoch: Instant,
    run: u64,
    broadcasts: usize,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    last_ns: AtomicU64,
    disconnects: AtomicUsize,
    hist: Shared,
}

impl Tally {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// `RUN:INDEX:T` with the run id in hex and `T` ns since the epoch.
fn payload(run: u64, index: usize, t_ns: u64) -> String {
    format!("{run:x}:{index}:{t_ns}")
}

fn parse(p: &[u8]) -> Option<(u64, usize, u64)> {
    let s = std::str::from_utf8(p).ok()?;
    let mut it = s.split(':');
    let run = u64::from_str_radix(it.next()?, 16).ok()?;
    let index = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((run, index, t))
}

async fn subscriber(mut sub: crate::peer::Sub, slot: usize, tally: Arc<Tally>) {
    let mut seen = vec![0u64; tally.broadcasts.div_ceil(64)];
    let mut lats = Vec::with_capacity(64);
    loop {
        lats.clear();
        let (mut fresh, mut dup, mut foreign) = (0u64, 0u64, 0u64);
        let mut on = |p: &[u8]| match parse(p) {
            Some((run, i, t)) if run == tally.run && i < tally.broadcasts => {
                let (w, b) = (i / 64, 1u64 << (i % 64));
                if seen[w] & b == 0 {
                    seen[w] |= b;
                    fresh += 1;
                    lats.push(tally.now_ns().saturating_sub(t));
                } else {
                    dup += 1;
                }
            }
            _ => foreign += 1,
        };
        if sub.recv_batch(&mut on).await.is_err() {
            tally.disconnects.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if fresh > 0 {
            tally.hist.record(slot, &lats);
            tally.delivered.fetch_add(fresh, Ordering::Relaxed);
            tally.last_ns.fetch_max(tally.now_ns(), Ordering::Relaxed);
        }
        if dup > 0 {
            tally.duplicates.fetch_add(dup, Ordering::Relaxed);
        }
        if foreign > 0 {
            tally.foreign.fetch_add(foreign, Ordering::Relaxed);
        }
    }
}

/// soketi: `senders` HTTP API connections, each taking the next broadcast when its
/// previous answer arrives. Returns the number answered 200.
async fn publish_pusher(
    target: &Target,
    tally: &Arc<Tally>,
    senders: usize,
) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..senders.max(1) {
        let mut publisher = pusher::Publisher::open(target.addr, &target.app).await?;
        let (next, accepted, tally, first_error) = (
            Arc::clone(&next),
            Arc::clone(&accepted),
            Arc::clone(tally),
            Arc::clone(&first_error),
        );
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tally.broadcasts {
                    return;
                }
                let data = payload(tally.run, i, tally.now_ns());
                match publisher.trigger(TOPIC, "bench", &data).await {
                    Ok(()) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let mut slot = first_error
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        slot.get_or_insert_with(|| format!("{e:#}"));
                        return;
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    if let Some(e) = first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        eprintln!("peers-bench: a publish failed: {e}");
    }
    Ok(accepted.load(Ordering::Relaxed))
}

/// mosquitto: one connection writing PUBLISH packets back to back; at QoS 1 a reader counts
/// the broker's PUBACKs and the count of PUBACKs is what was accepted.
async fn publish_mqtt(target: &Target, tally: &Arc<Tally>) -> anyhow::Result<usize> {
    let id = format!("wb-{:x}-pub", target.run);
    let client = mqtt::Client::open(target.addr, None, &id, None, target.qos).await?;
    let (mut rd, mut wr) = client.stream.into_split();
    let mut buf = client.buf;
    let m = tally.broadcasts;
    let qos = target.qos;
    let acks = tokio::spawn(async move {
        let mut n = 0usize;
        while qos > 0 && n < m {
            while let Some((first, _)) = mqtt::take_packet(&mut buf)? {
                if first >> 4 == 4 {
                    n += 1;
                }
            }
            if n >= m {
                break;
            }
            if rd.read_buf(&mut buf).await? == 0 {
                bail!("broker closed the publisher");
            }
        }
        anyhow::Ok(n)
    });
    for i in 0..m {
        let pid = u16::try_from(i % 65_535 + 1).unwrap_or(1);
        let p = mqtt::publish_packet(
            TOPIC,
            payload(tally.run, i, tally.now_ns()).as_bytes(),
            qos,
            pid,
        );
        wr.write_all(&p).await.context("publish")?;
    }
    if qos == 0 {
        acks.abort();
        return Ok(m);
    }
    match tokio::time::timeout(Duration::from_secs(60), acks).await {
        Ok(r) => r.context("PUBACK reader")?,
        Err(_) => Err(anyhow!("PUBACKs did not all arrive within 60 s")),
    }
}

/// nats-server: one connection writing PUBs back to back, then PING until PONG (so the
/// server has read them all).
async fn publish_nats(target: &Target, tally: &Arc<Tally>) -> anyhow::Result<usize> {
    let mut client = nats::Client::open(target.addr, None, None).await?;
    for i in 0..tally.broadcasts {
        let p = payload(tally.run, i, tally.now_ns());
        let frame = format!("PUB {TOPIC} {}\r\n{p}\r\n", p.len());
        client
            .stream
            .write_all(frame.as_bytes())
            .await
            .context("publish")?;
    }
    client.stream.write_all(b"PING\r\n").await?;
    tokio::time::timeout(Duration::from_secs(60), client.wait_pong())
        .await
        .map_err(|_| anyhow!("no PONG within 60 s after publishing"))??;
    Ok(tally.broadcasts)
}

#[allow(clippy::cast_precision_loss)] // counts and ns far below 2^52
pub async fn run(target: Arc<Target>, o: Options) -> anyhow::Result<Report> {
    check_capacity(o.devices + o.senders)?;
    if o.broadcasts == 0 || o.devices == 0 {
        bail!("need at least one device and one broadcast");
    }
    let tally = Arc::new(Tally {
        epoch: Instant::now(),
        run: target.run,
        broadcasts: o.broadcasts,
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        disconnects: AtomicUsize::new(0),
        hist: Shared::new(16),
    });
    // Connect every subscriber (bounded concurrency, spread source addresses).
    let gate = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..o.devices {
        let (t, gate) = (Arc::clone(&target), Arc::clone(&gate));
        opening.spawn(async move {
            let _permit = gate.acquire().await?;
            t.subscribe(i, source_for(i, o.sources), TOPIC).await
        });
    }
    let mut subs = Vec::with_capacity(o.devices);
    let (mut failed, mut first_error) = (0, None);
    while let Some(r) = opening.join_next().await {
        match r.context("connect task")? {
            Ok(s) => subs.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connected = subs.len();
    progress(
        o.progress,
        &format!("{connected} subscribers connected ({failed} failed)"),
    );
    if connected == 0 {
        bail!(
            "no subscriber connected: {}",
            first_error.unwrap_or_default()
        );
    }
    let mut readers = tokio::task::JoinSet::new();
    for (slot, sub) in subs.into_iter().enumerate() {
        readers.spawn(subscriber(sub, slot, Arc::clone(&tally)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let server_cpu0 = o.server_pid.and_then(|p| cpu_seconds(Some(p)));
    let client_cpu0 = cpu_seconds(None);
    let first_send = tally.now_ns();
    let accepted = match target.kind {
        Kind::Soketi => publish_pusher(&target, &tally, o.senders).await?,
        Kind::Mqtt => publish_mqtt(&target, &tally).await?,
        Kind::Nats => publish_nats(&target, &tally).await?,
    };
    let send_s = (tally.now_ns() - first_send) as f64 / 1e9;
    if accepted == 0 {
        bail!("no broadcast was accepted");
    }
    progress(
        o.progress,
        &format!(
            "{accepted} of {} broadcasts accepted in {send_s:.3} s",
            o.broadcasts
        ),
    );

    let expected = connected as u64 * accepted as u64;
    let drain_start = Instant::now();
    let (mut last_count, mut last_change) = (u64::MAX, Instant::now());
    loop {
        let d = tally.delivered.load(Ordering::Relaxed);
        if d >= expected || drain_start.elapsed() > DRAIN_MAX {
            break;
        }
        if d != last_count {
            (last_count, last_change) = (d, Instant::now());
        } else if last_change.elapsed() > o.drain_idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let server_cpu1 = o.server_pid.and_then(|p| cpu_seconds(Some(p)));
    let client_cpu1 = cpu_seconds(None);
    let cpu_span_s = (tally.now_ns() - first_send) as f64 / 1e9;
    let server_rss_kib = o.server_pid.and_then(vm_rss_kib);
    readers.abort_all();

    let delivered = tally.delivered.load(Ordering::Relaxed);
    let last = tally.last_ns.load(Ordering::Relaxed).max(first_send + 1);
    let delivery_s = (last - first_send) as f64 / 1e9;
    let server_cpu = server_cpu0.zip(server_cpu1).map(|(a, b)| b - a);
    Ok(Report {
        scenario: "fanout",
        peer: target.kind.label(),
        transport: "plain",
        publish: match target.kind {
            Kind::Soketi => "HTTP API POST /apps/ID/events, one request at a time per sender",
            Kind::Mqtt => "one MQTT connection, PUBLISH back to back",
            Kind::Nats => "one NATS connection, PUB back to back",
        },
        acked: target.kind == Kind::Mqtt && target.qos > 0,
        devices: o.devices,
        connected,
        failed,
        first_error,
        broadcasts: o.broadcasts,
        accepted,
        senders: if target.kind == Kind::Soketi {
            o.senders.max(1)
        } else {
            1
        },
        expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        duplicates: tally.duplicates.load(Ordering::Relaxed),
        foreign: tally.foreign.load(Ordering::Relaxed),
        device_disconnects: tally.disconnects.load(Ordering::Relaxed),
        send_s,
        delivery_s,
        deliveries_per_s: delivered as f64 / delivery_s,
        latency: Summary::of(&tally.hist.merged()),
        server_cpu_cores: server_cpu.map(|c| c / cpu_span_s),
        server_cpu_us_per_delivery: server_cpu
            .filter(|_| delivered > 0)
            .map(|c| c * 1e6 / delivered as f64),
        client_cpu_cores: client_cpu0
            .zip(client_cpu1)
            .map(|(a, b)| (b - a) / cpu_span_s),
        server_rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let p = payload(0xabc, 17, 123_456);
        assert_eq!(parse(p.as_bytes()), Some((0xabc, 17, 123_456)));
        assert_eq!(parse(b"nonsense"), None);
    }
}
