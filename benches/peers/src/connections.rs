//! Idle connections: open `N` subscribed connections (each on its own channel / topic /
//! subject, like a device on its own mailbox), hold them while reading, and report the
//! server's RSS per connection: (`VmRSS` after the hold − before connecting) ÷ connected.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::net::source_for;
use crate::peer::Target;
use crate::sys::{open_files_limit, vm_rss_kib};
use crate::{progress, MAX_CONNS_PER_PROCESS};

pub struct Options {
    pub n: usize,
    pub hold: Duration,
    pub sources: u8,
    pub concurrency: usize,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub peer: &'static str,
    pub transport: &'static str,
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub dropped: usize,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub hold_s: f64,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_after_hold_kib: Option<u64>,
    pub server_rss_per_connection_kib: Option<f64>,
}

/// Checks `n` sockets (plus a margin) fit this process's open-file limit and the cap.
///
/// # Errors
/// Too many for one process.
pub fn check_capacity(n: usize) -> anyhow::Result<()> {
    if n > MAX_CONNS_PER_PROCESS {
        bail!("{n} connections in one process: at most {MAX_CONNS_PER_PROCESS} (open-file cap); split the load");
    }
    if let Some(limit) = open_files_limit() {
        if (n as u64) + 64 > limit {
            bail!("{n} connections need more than this process's open-file limit ({limit})");
        }
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)] // counts and KiB far below 2^52
pub async fn run(target: Arc<Target>, o: Options) -> anyhow::Result<Report> {
    check_capacity(o.n)?;
    let rss_before = o.server_pid.and_then(vm_rss_kib);
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let gate = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..o.n {
        let (t, connected, failed, dropped, first_error, gate) = (
            Arc::clone(&target),
            Arc::clone(&connected),
            Arc::clone(&failed),
            Arc::clone(&dropped),
            Arc::clone(&first_error),
            Arc::clone(&gate),
        );
        set.spawn(async move {
            let opened = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                t.subscribe(i, source_for(i, o.sources), &t.topic("dev", Some(i)))
                    .await
            };
            let mut sub = match opened {
                Ok(s) => s,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let mut slot = first_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    slot.get_or_insert_with(|| format!("{e:#}"));
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let mut ignore = |_: &[u8]| {};
            while sub.recv_batch(&mut ignore).await.is_ok() {}
            dropped.fetch_add(1, Ordering::Relaxed);
        });
    }
    // Every attempt ends within the step timeouts; bound the whole phase anyway.
    let deadline = started + Duration::from_secs(120) + Duration::from_millis(o.n as u64 * 20);
    let mut last_note = Instant::now();
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < o.n {
        if Instant::now() > deadline {
            bail!("connecting did not finish in time");
        }
        if last_note.elapsed() >= Duration::from_secs(1) {
            progress(
                o.progress,
                &format!("connected {}/{}", connected.load(Ordering::Relaxed), o.n),
            );
            last_note = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    let n_connected = connected.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = o.server_pid.and_then(vm_rss_kib);
    progress(
        o.progress,
        &format!("holding {n_connected} connections for {:?}", o.hold),
    );
    let hold_start = Instant::now();
    tokio::time::sleep(o.hold).await;
    let hold_s = hold_start.elapsed().as_secs_f64();
    let rss_after = o.server_pid.and_then(vm_rss_kib);
    set.abort_all();
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if n_connected > 0 => Some((a as f64 - b as f64) / n_connected as f64),
        _ => None,
    };
    let first_error = first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Report {
        scenario: "connections",
        peer: target.kind.label(),
        transport: "plain",
        requested: o.n,
        connected: n_connected,
        failed: failed.load(Ordering::Relaxed),
        first_error,
        dropped: dropped.load(Ordering::Relaxed),
        connect_s,
        connects_per_s: n_connected as f64 / connect_s.max(1e-9),
        hold_s,
        server_rss_before_kib: rss_before,
        server_rss_connected_kib: rss_connected,
        server_rss_after_hold_kib: rss_after,
        server_rss_per_connection_kib: per_conn,
    })
}
