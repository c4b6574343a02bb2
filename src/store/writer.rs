//! The single writer: one thread owns every write transaction. It takes every request
//! waiting (up to a cap) into one transaction, commits once, then answers them all and
//! tells the [`CommitListener`] what became durable. Many requests per fsync is how
//! durable throughput scales.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::ReadableTable;
use tokio::sync::{mpsc, oneshot};

use super::msg_cache::MessageCache;
use super::open_tables::Tables;
use super::ops_apps::{self, FirstStartOp, NewApp, NewCredential};
use super::ops_console::{self, ConsoleOp};
use super::ops_delivery::{self, Cancelled};
use super::ops_devices::{self, DevicePatch, NewDevice};
use super::ops_messages::{self, PushOp, PushReply};
use super::ops_sweep::{self, SweepReport};
use super::records::{AppRecord, AuditRecord, DeviceRecord, UserRecord};
use super::tables::{StatsRow, META_CLOCK, STATS};
use super::tables::{META, META_NEXT_SEQ};
use super::{CommitListener, Committed, StoreError};
use crate::domain::IdList;
use crate::metrics::Metrics;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before answering (the default).
    Immediate,
    /// Answer after an in-memory commit; fsync on a short timer.
    Relaxed,
}

#[derive(Clone)]
pub struct WriterConfig {
    pub durability: Durability,
    /// Most requests taken into one transaction.
    pub max_batch: usize,
    /// Capacity of the request queue in front of the writer.
    pub queue: usize,
    /// Where commits and per-app counts are reported, if anywhere.
    pub metrics: Option<Arc<Metrics>>,
    /// Bytes of page cache the database may hold.
    pub cache_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Immediate,
            max_batch: 2048,
            queue: 8192,
            metrics: None,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

pub(crate) enum Op {
    Push(Box<PushOp>, Reply<PushReply>),
    Ack {
        app: String,
        device: String,
        ids: IdList,
        reply: Reply<usize>,
    },
    Delivered {
        app: String,
        device: String,
        items: Vec<(u64, Option<String>)>,
    },
    Opened {
        app: String,
        ids: IdList,
    },
    Cancel {
        app: String,
        id: String,
        reply: Reply<Cancelled>,
    },
    ClearGap {
        app: String,
        device: String,
        told: u64,
    },
    Sweep {
        now_ms: u64,
        reply: Reply<SweepReport>,
    },
    FirstStart(Box<FirstStartOp>, Reply<()>),
    CreateApp(Box<NewApp>, Reply<()>),
    UpdateApp {
        app: String,
        update: Box<dyn FnOnce(&mut AppRecord) + Send>,
        reply: Reply<AppRecord>,
    },
    DeleteApp(String, Reply<()>),
    CreateCredential(Box<NewCredential>, Reply<()>),
    RevokeCredential {
        app: String,
        id: String,
        reply: Reply<()>,
    },
    RegisterDevice(Box<NewDevice>, Reply<()>),
    PatchDevice {
        app: String,
        device: String,
        patch: DevicePatch,
        reply: Reply<DeviceRecord>,
    },
    DeleteDevice {
        app: String,
        device: String,
        reply: Reply<()>,
    },
    TouchDevice {
        app: String,
        device: String,
        at_ms: u64,
    },
    Audit(Box<AuditRecord>, Reply<()>),
    Console(Box<ConsoleOp>, Reply<UserRecord>),
    Shutdown,
}

/// Counters of the writer's work, readable from any thread (metrics, tests, benchmarks).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Requests applied in committed transactions.
    pub requests: std::sync::atomic::AtomicU64,
    /// Most requests seen in one transaction.
    pub largest_batch: std::sync::atomic::AtomicU64,
}

/// State the writer carries between transactions.
pub(crate) struct WriterState {
    pub next_seq: u64,
    /// The writer's clock (ms): never behind any time it saw, so expiry never runs backwards.
    pub clock: u64,
    /// Events of the current transaction, published after it commits.
    pub events: Vec<Committed>,
    /// Statistics of the current transaction, by (app, minute), written before it commits.
    pub stats: HashMap<String, HashMap<u64, StatsRow>>,
    /// The per-app counts written by the current transaction, reported once it commits.
    pub counted: Vec<(String, StatsRow)>,
    pub next_stats_gc_ms: u64,
    /// `ttl: 0` messages sent in the last [`LIVE_ONLY_WINDOW_MS`](super::ops_messages::LIVE_ONLY_WINDOW_MS):
    /// (app, seq) → (message id, until ms). They have no mailbox or topic-log entry, so this
    /// is how a session's delivery report finds the message to count it.
    pub live_only: HashMap<(String, u64), (String, u64)>,
    /// Message records read and changed by the current transaction, written before it commits.
    pub messages: MessageCache,
}

impl WriterState {
    /// Adds to this minute's statistics of an app.
    pub fn count(&mut self, app: &str, f: impl FnOnce(&mut StatsRow)) {
        let minute = self.clock / 60_000;
        // Looked up by `&str` first: a push or ack of a known app allocates nothing here.
        let rows = match self.stats.get_mut(app) {
            Some(rows) => rows,
            None => self.stats.entry(app.to_owned()).or_default(),
        };
        f(rows.entry(minute).or_default());
    }

    fn tick(&mut self) {
        self.clock = self.clock.max(crate::domain::now_ms());
    }
}

type Finish = Box<dyn FnOnce(bool) + Send>;

fn finish<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Finish {
    Box::new(move |committed| {
        let answer = if committed || result.is_err() {
            result
        } else {
            Err(StoreError::CommitFailed)
        };
        // The caller may have gone away (client disconnected); nothing to do then.
        let _ = reply.send(answer);
    })
}

pub(crate) fn spawn(
    db: Arc<redb::Database>,
    config: WriterConfig,
    start: (u64, u64),
    listener: Arc<dyn CommitListener>,
    stats: Arc<WriterStats>,
    clock: Arc<AtomicU64>,
) -> Result<(mpsc::Sender<Op>, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let handle = std::thread::Builder::new()
        .name("warbler-writer".into())
        .spawn(move || run(&db, config, start, rx, &*listener, &stats, &clock))
        .map_err(|e| StoreError::Storage(redb::Error::Io(e)))?;
    Ok((tx, handle))
}

fn run(
    db: &redb::Database,
    config: WriterConfig,
    (next_seq, clock_ms): (u64, u64),
    mut rx: mpsc::Receiver<Op>,
    listener: &dyn CommitListener,
    stats: &WriterStats,
    clock: &AtomicU64,
) {
    let sinks = Sinks {
        listener,
        stats,
        clock,
        metrics: config.metrics.as_deref(),
    };
    let mut state = WriterState {
        next_seq,
        clock: clock_ms,
        events: Vec::new(),
        stats: HashMap::new(),
        counted: Vec::new(),
        next_stats_gc_ms: 0,
        live_only: HashMap::new(),
        messages: MessageCache::default(),
    };
    // Relaxed durability: commits skip fsync, but one is made durable at least every
    // RELAXED_FLUSH, busy or idle.
    let mut unflushed = false;
    let mut last_durable = std::time::Instant::now();
    let mut batch: Vec<Op> = Vec::with_capacity(config.max_batch);
    loop {
        let first = if unflushed {
            let left = RELAXED_FLUSH.saturating_sub(last_durable.elapsed());
            if let Some(op) = recv_timeout(&mut rx, left) {
                Some(op)
            } else {
                if let Err(e) = flush(db) {
                    tracing::error!(error = %e, "relaxed-durability flush failed");
                }
                unflushed = false;
                last_durable = std::time::Instant::now();
                continue;
            }
        } else {
            rx.blocking_recv()
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|op| matches!(op, Op::Shutdown));
        let ops: Vec<Op> = batch
            .drain(..)
            .filter(|op| !matches!(op, Op::Shutdown))
            .collect();
        if !ops.is_empty() {
            let durability = if config.durability == Durability::Relaxed
                && last_durable.elapsed() < RELAXED_FLUSH
            {
                Durability::Relaxed
            } else {
                Durability::Immediate
            };
            commit_batch(db, durability, &mut state, ops, &sinks);
            unflushed = durability == Durability::Relaxed;
            if !unflushed {
                last_durable = std::time::Instant::now();
            }
        }
        if stop {
            // Take what is still queued, then stop.
            rx.close();
            let rest: Vec<Op> = std::iter::from_fn(|| rx.try_recv().ok())
                .filter(|op| !matches!(op, Op::Shutdown))
                .collect();
            if !rest.is_empty() {
                commit_batch(db, config.durability, &mut state, rest, &sinks);
            }
            break;
        }
    }
    if unflushed {
        if let Err(e) = flush(db) {
            tracing::error!(error = %e, "final flush failed");
        }
    }
    tracing::debug!("store writer stopped");
}

/// Longest time a relaxed-durability commit stays without fsync.
const RELAXED_FLUSH: Duration = Duration::from_millis(50);

fn recv_timeout(rx: &mut mpsc::Receiver<Op>, timeout: Duration) -> Option<Op> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match rx.try_recv() {
            Ok(op) => return Some(op),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => {
                if std::time::Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn flush(db: &redb::Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

/// Who hears about a commit once it is durable.
struct Sinks<'a> {
    listener: &'a dyn CommitListener,
    stats: &'a WriterStats,
    clock: &'a AtomicU64,
    metrics: Option<&'a Metrics>,
}

fn commit_batch(
    db: &redb::Database,
    durability: Durability,
    state: &mut WriterState,
    ops: Vec<Op>,
    sinks: &Sinks<'_>,
) {
    let Sinks {
        listener,
        stats,
        clock,
        metrics,
    } = *sinks;
    let started = std::time::Instant::now();
    let count = ops.len();
    let seq_before = state.next_seq;
    let clock_before = state.clock;
    state.tick();
    let mut finishers: Vec<Finish> = Vec::with_capacity(ops.len());
    let outcome = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(match durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Relaxed => redb::Durability::None,
        })?;
        // Tenant payloads are untrusted input: redb's design recommends 2PC for them.
        txn.set_two_phase_commit(true);
        let mut tables = Tables::new(&txn);
        for op in ops {
            apply(&mut tables, state, op, &mut finishers)?;
        }
        state.messages.flush(&mut tables)?;
        drop(tables);
        if state.next_seq != seq_before {
            txn.open_table(META)?
                .insert(META_NEXT_SEQ, state.next_seq)?;
        }
        if state.clock != clock_before {
            txn.open_table(META)?.insert(META_CLOCK, state.clock)?;
        }
        flush_stats(&txn, state)?;
        txn.commit()?;
        Ok(())
    })();
    let committed = match outcome {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, requests = count, "store commit failed; answering 503");
            state.next_seq = seq_before;
            state.messages.clear();
            state.events.clear();
            state.stats.clear();
            state.counted.clear();
            false
        }
    };
    if committed {
        // Publish the clock before anyone hears of this commit, so a reader that saw the
        // commit never sees an older clock.
        clock.fetch_max(state.clock, Ordering::Release);
        use std::sync::atomic::Ordering::Relaxed;
        stats.commits.fetch_add(1, Relaxed);
        stats.requests.fetch_add(count as u64, Relaxed);
        stats.largest_batch.fetch_max(count as u64, Relaxed);
        if let Some(m) = metrics {
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.commit_batch_size
                .observe(f64::from(u32::try_from(count).unwrap_or(u32::MAX)));
            for (app, row) in state.counted.drain(..) {
                Metrics::app(&m.pushes_accepted, &app).inc_by(row.accepted);
                Metrics::app(&m.delivered, &app).inc_by(row.delivered);
                Metrics::app(&m.acked, &app).inc_by(row.acked);
                Metrics::app(&m.opened, &app).inc_by(row.opened);
                Metrics::app(&m.expired, &app).inc_by(row.expired);
            }
        }
        state.counted.clear();
        for event in state.events.drain(..) {
            listener.committed(&event);
        }
    }
    for f in finishers {
        f(committed);
    }
    tracing::trace!(
        requests = count,
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "batch committed"
    );
}

fn flush_stats(txn: &redb::WriteTransaction, state: &mut WriterState) -> Result<(), StoreError> {
    if state.stats.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(STATS)?;
    let deltas: Vec<(String, u64, StatsRow)> = state
        .stats
        .drain()
        .flat_map(|(app, rows)| {
            rows.into_iter()
                .map(move |(minute, delta)| (app.clone(), minute, delta))
        })
        .collect();
    for (app, minute, delta) in deltas {
        let mut row = table
            .get((app.as_str(), minute))?
            .map(|v| StatsRow::decode(v.value()))
            .transpose()?
            .unwrap_or_default();
        row.add(&delta);
        table.insert((app.as_str(), minute), row.encode().as_slice())?;
        state.counted.push((app, delta));
    }
    Ok(())
}

/// Applies one request to the open transaction. A refusal (not found, conflict, invalid)
/// wrote nothing and answers only its caller; a storage error aborts the whole batch.
fn apply(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    op: Op,
    finishers: &mut Vec<Finish>,
) -> Result<(), StoreError> {
    fn settle<T: Send + 'static>(
        finishers: &mut Vec<Finish>,
        reply: Reply<T>,
        result: Result<T, StoreError>,
    ) -> Result<(), StoreError> {
        match result {
            Err(e) if !e.is_refusal() => {
                finishers.push(finish(reply, Err(StoreError::CommitFailed)));
                Err(e)
            }
            other => {
                finishers.push(finish(reply, other));
                Ok(())
            }
        }
    }
    match op {
        Op::Push(push, reply) => {
            let r = ops_messages::push(tables, state, *push);
            settle(finishers, reply, r)
        }
        Op::Ack {
            app,
            device,
            ids,
            reply,
        } => {
            let r = ops_delivery::ack(tables, state, &app, &device, &ids);
            settle(finishers, reply, r)
        }
        Op::Delivered { app, device, items } => {
            ops_delivery::delivered(tables, state, &app, &device, &items)
        }
        Op::Opened { app, ids } => ops_delivery::opened(tables, state, &app, &ids),
        Op::Cancel { app, id, reply } => {
            let r = ops_delivery::cancel(tables, state, &app, &id);
            settle(finishers, reply, r)
        }
        Op::ClearGap { app, device, told } => ops_devices::clear_gap(tables, &app, &device, told),
        Op::Sweep { now_ms, reply } => {
            state.clock = state.clock.max(now_ms);
            let r = ops_sweep::sweep(tables, state);
            settle(finishers, reply, r)
        }
        Op::FirstStart(op, reply) => {
            let r = ops_apps::first_start(tables, *op);
            settle(finishers, reply, r)
        }
        Op::CreateApp(app, reply) => {
            let r = ops_apps::create_app(tables, *app);
            settle(finishers, reply, r)
        }
        Op::UpdateApp { app, update, reply } => {
            let r = ops_apps::update_app(tables, state, &app, update);
            settle(finishers, reply, r)
        }
        Op::DeleteApp(app, reply) => {
            let r = ops_apps::delete_app(tables, state, &app);
            settle(finishers, reply, r)
        }
        Op::CreateCredential(cred, reply) => {
            let r = ops_apps::create_credential(tables, *cred);
            settle(finishers, reply, r)
        }
        Op::RevokeCredential { app, id, reply } => {
            let r = ops_apps::revoke_credential(tables, &app, &id);
            settle(finishers, reply, r)
        }
        Op::RegisterDevice(device, reply) => {
            let r = ops_devices::register(tables, state, *device);
            settle(finishers, reply, r)
        }
        Op::PatchDevice {
            app,
            device,
            patch,
            reply,
        } => {
            let r = ops_devices::patch(tables, state, &app, &device, patch);
            settle(finishers, reply, r)
        }
        Op::DeleteDevice { app, device, reply } => {
            let r = ops_devices::delete(tables, state, &app, &device);
            settle(finishers, reply, r)
        }
        Op::TouchDevice { app, device, at_ms } => ops_devices::touch(tables, &app, &device, at_ms),
        Op::Audit(record, reply) => {
            let r = ops_apps::audit(tables, state, &record);
            settle(finishers, reply, r)
        }
        Op::Console(op, reply) => {
            let r = ops_console::apply(tables, *op);
            settle(finishers, reply, r)
        }
        Op::Shutdown => Ok(()),
    }
}
