//! The single writer: one thread owns every write transaction. It takes every request
//! waiting (up to a cap) into one transaction, commits once, then answers them all and
//! tells the [`CommitListener`] what became durable. Many requests per fsync is how
//! durable throughput scales.
//!
//! With the journal on (the default), a batch of hot-path requests is made durable by
//! appending it to the [`journal`](super::journal) and fsyncing that, before redb applies
//! it without an fsync of its own; a checkpoint (a durable redb commit) follows every
//! [`WriterConfig::checkpoint_every`] or [`CHECKPOINT_BYTES`], and at shutdown. At open,
//! [`spawn`] first applies what the journal holds past the last checkpoint.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::ReadableTable;
use tokio::sync::{mpsc, oneshot};

use super::journal::{self, Journal};
use super::journal_ops;
use super::msg_cache::MessageCache;
use super::open_tables::Tables;
use super::ops_apps::{self, FirstStartOp, NewApp, NewCredential};
use super::ops_console::{self, ConsoleOp};
use super::ops_delivery::{self, Cancelled};
use super::ops_devices::{self, DevicePatch, NewDevice};
use super::ops_messages::{self, PushOp, PushReply};
use super::ops_sweep::{self, SweepReport};
use super::records::{AppRecord, AuditRecord, DeviceRecord, UserRecord};
use super::tables::{Start, StatsRow, META_CLOCK, META_JOURNAL_NEXT, STATS};
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
    /// Make immediate commits durable through the journal (see the module doc). A journal
    /// left by an earlier run is applied at open either way.
    pub journal: bool,
    /// Longest time journaled commits wait for a checkpoint.
    pub checkpoint_every: Duration,
    /// Longest time a batch of only lazy requests ([`Op::lazy`]) waits for a request that
    /// needs a commit of its own, so that it shares that commit instead of paying for one.
    pub lazy_hold: Duration,
}

/// Journal size at which a checkpoint is made whatever the time.
pub const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Immediate,
            max_batch: 2048,
            queue: 8192,
            metrics: None,
            cache_bytes: 256 * 1024 * 1024,
            journal: true,
            checkpoint_every: Duration::from_millis(200),
            lazy_hold: Duration::from_millis(2),
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

impl Op {
    /// Whether applying the request may change an app or credential record (and so must
    /// invalidate the store's record caches). Exhaustive on purpose: a new request kind
    /// has to decide.
    fn may_change_records(&self) -> bool {
        match self {
            Op::Push(..)
            | Op::Ack { .. }
            | Op::Delivered { .. }
            | Op::Opened { .. }
            | Op::Cancel { .. }
            | Op::ClearGap { .. }
            | Op::Sweep { .. }
            | Op::RegisterDevice(..)
            | Op::PatchDevice { .. }
            | Op::DeleteDevice { .. }
            | Op::TouchDevice { .. }
            | Op::Audit(..)
            | Op::Shutdown => false,
            Op::FirstStart(..)
            | Op::CreateApp(..)
            | Op::UpdateApp { .. }
            | Op::DeleteApp(..)
            | Op::CreateCredential(..)
            | Op::RevokeCredential { .. }
            | Op::Console(..) => true,
        }
    }

    /// Whether the request may be answered before its journal record is on disk: a
    /// device's acks and the marks that only feed statistics and reminders. A crash of
    /// the machine (not just the process, whose writes the page cache keeps) can lose the
    /// last few of them; an ack lost so means the message is sent again, which
    /// at-least-once delivery allows and clients dedupe by id. Every later synced record
    /// takes them to the disk with it, so no request answered as durable can depend on
    /// one that was lost.
    fn lazy(&self) -> bool {
        matches!(
            self,
            Op::Ack { .. }
                | Op::Delivered { .. }
                | Op::Opened { .. }
                | Op::ClearGap { .. }
                | Op::TouchDevice { .. }
        )
    }
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
    /// Journal records written, and of those fdatasynced before their batch was answered
    /// (the rest reach the disk with the next synced record or checkpoint; see [`Op::lazy`]).
    pub journal_records: std::sync::atomic::AtomicU64,
    pub journal_syncs: std::sync::atomic::AtomicU64,
    /// Commits (or failed attempts) that may have changed an app or credential record,
    /// counted before their requests are answered: the generation of the store's record
    /// caches (`record_cache.rs`).
    pub record_commits: std::sync::atomic::AtomicU64,
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
    /// The journal record of the current batch, reused.
    journal_buf: Vec<u8>,
    /// The last `sent_at` stamp formatted, by its time in ms: every push of a batch shares
    /// the writer's clock, so a batch formats it once.
    sent_at: (u64, Arc<str>),
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

    /// `now` as the RFC 3339 stamp in message frames (`sent_at`).
    pub fn sent_at(&mut self, now: u64) -> Arc<str> {
        if self.sent_at.0 != now || self.sent_at.1.is_empty() {
            self.sent_at = (now, crate::domain::format_rfc3339_ms(now).into());
        }
        Arc::clone(&self.sent_at.1)
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

/// Applies what the journal at `journal_path` holds past the last checkpoint, then starts
/// the writer thread.
///
/// # Errors
/// A journal that cannot be read or applied (see [`recover`]); storage errors.
pub(crate) fn spawn(
    db: Arc<redb::Database>,
    config: WriterConfig,
    start: &Start,
    journal_path: &Path,
    listener: Arc<dyn CommitListener>,
    stats: Arc<WriterStats>,
    clock: Arc<AtomicU64>,
) -> Result<(mpsc::Sender<Op>, std::thread::JoinHandle<()>), StoreError> {
    let mut state = WriterState {
        next_seq: start.next_seq,
        clock: start.clock,
        events: Vec::new(),
        stats: HashMap::new(),
        counted: Vec::new(),
        next_stats_gc_ms: 0,
        live_only: HashMap::new(),
        messages: MessageCache::default(),
        journal_buf: Vec::new(),
        sent_at: (0, Arc::from("")),
    };
    let journal = recover(&db, &mut state, start, journal_path, &*listener, &clock)?;
    let journal = (config.journal && config.durability == Durability::Immediate).then_some(journal);
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let handle = std::thread::Builder::new()
        .name("warbler-writer".into())
        .spawn(move || {
            let sinks = Sinks {
                listener: &*listener,
                stats: &stats,
                clock: &clock,
                metrics: config.metrics.as_deref(),
            };
            run(&db, &config, state, journal, rx, &sinks);
        })
        .map_err(|e| StoreError::Storage(redb::Error::Io(e)))?;
    Ok((tx, handle))
}

fn journal_error(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Journal {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Applies the journal's records past the store's last checkpoint (`start.journal_next`),
/// in order, each as the batch it was; makes the result durable and empties the journal.
/// A torn last record is dropped: it was never answered.
///
/// # Errors
/// `Journal` when the records do not follow on from the store (a gap in their numbers, or
/// a batch that does not start where the store is): the file belongs to another state of
/// the data dir, and applying it would be wrong. The message says to move it aside.
fn recover(
    db: &redb::Database,
    state: &mut WriterState,
    start: &Start,
    path: &Path,
    listener: &dyn CommitListener,
    clock: &AtomicU64,
) -> Result<Journal, StoreError> {
    let contents = journal::read(path, start.store_id).map_err(|e| journal_error(path, e))?;
    let aside =
        "move the file out of the data dir to start without it (the pushes it holds are then lost)";
    let mut next = start.journal_next;
    let replay_stats = WriterStats::default();
    let sinks = Sinks {
        listener,
        stats: &replay_stats,
        clock,
        metrics: None,
    };
    let (mut batches, mut requests) = (0u64, 0usize);
    for record in contents
        .records
        .iter()
        .filter(|r| r.seq >= start.journal_next)
    {
        if record.seq != next {
            return Err(journal_error(
                path,
                format!(
                    "record {} follows record {}: records are missing; {aside}",
                    record.seq,
                    next.saturating_sub(1)
                ),
            ));
        }
        let batch = journal_ops::decode(&record.payload).map_err(|e| journal_error(path, e))?;
        if batch.next_seq != state.next_seq {
            return Err(journal_error(
                path,
                format!(
                    "record {} starts at message {} but the store is at {}; {aside}",
                    record.seq, batch.next_seq, state.next_seq
                ),
            ));
        }
        requests += batch.ops.len();
        let mode = Mode::Replay {
            clock: batch.clock,
            journal_next: record.seq + 1,
        };
        if !commit_batch(db, mode, state, batch.ops, &sinks) {
            return Err(journal_error(
                path,
                format!("applying record {} failed", record.seq),
            ));
        }
        next = record.seq + 1;
        batches += 1;
    }
    if batches > 0 || contents.torn_bytes > 0 {
        flush(db)?;
        tracing::info!(
            batches,
            requests,
            journal_bytes = contents.good_len,
            torn_bytes = contents.torn_bytes,
            journal = %path.display(),
            "store journal applied: the previous run stopped without a checkpoint"
        );
    }
    Journal::open(path, start.store_id, next).map_err(|e| journal_error(path, e))
}

fn run(
    db: &redb::Database,
    config: &WriterConfig,
    mut state: WriterState,
    mut journal: Option<Journal>,
    mut rx: mpsc::Receiver<Op>,
    sinks: &Sinks<'_>,
) {
    // A timer for waits with a deadline (relaxed flushes, checkpoints, held batches).
    let timer = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the store writer cannot start its timer");
            return;
        }
    };
    // Relaxed durability: commits skip fsync, but one is made durable at least every
    // RELAXED_FLUSH, busy or idle.
    let mut unflushed = false;
    let mut last_durable = Instant::now();
    // When the journal took its first record since the last checkpoint.
    let mut journal_since: Option<Instant> = None;
    // Lazy requests waiting to share the next commit, and how long they may wait.
    let mut held: Vec<Op> = Vec::new();
    let mut held_until: Option<Instant> = None;
    let mut batch: Vec<Op> = Vec::with_capacity(config.max_batch);
    loop {
        let checkpoint_at = if unflushed {
            Some(last_durable + RELAXED_FLUSH)
        } else {
            journal_since.map(|since| since + config.checkpoint_every)
        };
        let deadline = match (checkpoint_at, held_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let first = match deadline {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // The timeout's timer is made inside `block_on`, where the runtime is.
                let waited = timer.block_on(async { tokio::time::timeout(left, rx.recv()).await });
                waited.ok()
            }
            None => Some(rx.blocking_recv()),
        };
        let closed = matches!(first, Some(None));
        if let Some(Some(op)) = first {
            batch.push(op);
            while batch.len() < config.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
        }
        let stop = closed || batch.iter().any(|op| matches!(op, Op::Shutdown));
        // Held requests go first: they came first.
        let mut ops: Vec<Op> = std::mem::take(&mut held);
        ops.extend(batch.drain(..).filter(|op| !matches!(op, Op::Shutdown)));
        let now = Instant::now();
        let hold = !stop
            && journal.is_some()
            && config.durability == Durability::Immediate
            && ops.len() < config.max_batch
            && held_until.is_none_or(|until| now < until)
            && ops.iter().all(Op::lazy);
        if hold && !ops.is_empty() {
            // Nobody waits on these for durability: let them ride with the next push
            // rather than pay a commit of their own.
            held = ops;
            held_until.get_or_insert(now + config.lazy_hold);
        } else if !ops.is_empty() {
            held_until = None;
            let relaxed =
                config.durability == Durability::Relaxed && last_durable.elapsed() < RELAXED_FLUSH;
            let mode = match journal.as_mut() {
                _ if relaxed => Mode::Relaxed,
                Some(j) => Mode::Journaled(j),
                None => Mode::Immediate,
            };
            let committed = commit_batch(db, mode, &mut state, ops, sinks);
            unflushed = relaxed;
            let journal_len = journal.as_ref().map_or(0, Journal::len);
            if journal_len == 0 {
                // Durable in redb itself: an immediate commit, or one the journal could not
                // carry (which emptied it).
                if committed && !relaxed {
                    last_durable = Instant::now();
                }
                journal_since = None;
            } else {
                journal_since.get_or_insert_with(Instant::now);
            }
        } else {
            held_until = None;
        }
        let journal_len = journal.as_ref().map_or(0, Journal::len);
        let checkpoint_due = if unflushed {
            last_durable.elapsed() >= RELAXED_FLUSH
        } else {
            journal_len >= CHECKPOINT_BYTES
                || journal_since.is_some_and(|since| since.elapsed() >= config.checkpoint_every)
        };
        if checkpoint_due && !stop {
            checkpoint(db, journal.as_mut(), sinks.metrics);
            unflushed = false;
            last_durable = Instant::now();
            journal_since = None;
        }
        if stop {
            // Take what is still queued, then stop.
            rx.close();
            let rest: Vec<Op> = std::iter::from_fn(|| rx.try_recv().ok())
                .filter(|op| !matches!(op, Op::Shutdown))
                .collect();
            if !rest.is_empty() {
                let mode = match journal.as_mut() {
                    Some(j) => Mode::Journaled(j),
                    None => Mode::Immediate,
                };
                commit_batch(db, mode, &mut state, rest, sinks);
            }
            break;
        }
    }
    if unflushed || journal.as_ref().is_some_and(|j| !j.is_empty()) {
        checkpoint(db, journal.as_mut(), sinks.metrics);
    }
    if let Some(j) = journal.as_mut().filter(|j| j.is_empty()) {
        // Stopped cleanly: the file is cut back to nothing until the next start.
        if let Err(e) = j.release() {
            tracing::warn!(error = %e, journal = %j.path().display(), "cutting back the store journal failed");
        }
    }
    tracing::debug!("store writer stopped");
}

/// Makes every commit so far durable in redb, then empties the journal. On failure the
/// journal keeps its records, so nothing answered is lost; the next checkpoint tries again.
fn checkpoint(db: &redb::Database, journal: Option<&mut Journal>, metrics: Option<&Metrics>) {
    let started = Instant::now();
    if let Err(e) = flush(db) {
        tracing::error!(error = %e, "store checkpoint failed; the journal keeps its records");
        return;
    }
    if let Some(m) = metrics {
        m.checkpoint_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    if let Some(j) = journal {
        if let Err(e) = j.clear() {
            tracing::error!(error = %e, journal = %j.path().display(), "emptying the store journal failed");
        }
    }
}

/// Longest time a relaxed-durability commit stays without fsync.
const RELAXED_FLUSH: Duration = Duration::from_millis(50);

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

/// How one batch becomes durable.
enum Mode<'j> {
    /// A durable redb commit (two fsyncs).
    Immediate,
    /// A redb commit without fsync; one follows on a timer.
    Relaxed,
    /// Appended to the journal and fsynced there, then a redb commit without fsync. A batch
    /// with a request the journal does not carry commits as `Immediate` instead.
    Journaled(&'j mut Journal),
    /// A journal record applied again at open, with the clock it was applied with.
    Replay { clock: u64, journal_next: u64 },
}

/// Applies and commits one batch, then answers its requests and publishes its events.
/// Returns whether it committed.
fn commit_batch(
    db: &redb::Database,
    mode: Mode<'_>,
    state: &mut WriterState,
    ops: Vec<Op>,
    sinks: &Sinks<'_>,
) -> bool {
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
    let (mut journal, durability, replay_next) = match mode {
        Mode::Immediate => (None, redb::Durability::Immediate, None),
        Mode::Relaxed => (None, redb::Durability::None, None),
        Mode::Journaled(j) => (Some(j), redb::Durability::None, None),
        Mode::Replay {
            clock,
            journal_next,
        } => {
            state.clock = state.clock.max(clock);
            (None, redb::Durability::None, Some(journal_next))
        }
    };
    if replay_next.is_none() {
        state.tick();
    }
    let journaled = journal.is_some()
        && journal_ops::encode(state.clock, state.next_seq, &ops, &mut state.journal_buf);
    // Whether the batch's record must be on disk before its requests are answered.
    let sync = !ops.iter().all(Op::lazy);
    let changes_records = ops.iter().any(Op::may_change_records);
    // A batch the journal cannot carry commits durably in redb, which covers every record.
    let durability = if journal.is_some() && !journaled {
        redb::Durability::Immediate
    } else {
        durability
    };
    // The first journal record that the state after this batch does not contain.
    let journal_next = replay_next.or_else(|| {
        journal
            .as_ref()
            .map(|j| j.next_seq() + u64::from(journaled))
    });
    let mut finishers: Vec<Finish> = Vec::with_capacity(ops.len());
    let outcome = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
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
        if let Some(next) = journal_next {
            txn.open_table(META)?.insert(META_JOURNAL_NEXT, next)?;
        }
        flush_stats(&txn, state)?;
        let Some(journal) = journal.as_mut().filter(|_| journaled) else {
            txn.commit()?;
            return Ok(());
        };
        // Durable once the record is on disk; redb's commit then only makes it visible.
        let len_before = journal.len();
        journal
            .append(&state.journal_buf, sync)
            .map_err(|e| journal_error(journal.path(), e))?;
        if let Err(e) = txn.commit() {
            if let Err(undo) = journal.undo_last(len_before) {
                // The record would be applied at the next start although this batch is
                // answered as failed. Stop before answering: then nobody was told either way.
                tracing::error!(error = %e, undo_error = %undo, journal = %journal.path().display(),
                    "store commit failed after its journal record was written, and the record cannot be taken back; stopping");
                std::process::abort();
            }
            return Err(e.into());
        }
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
    if changes_records {
        // Before any request of this batch is answered (a revoke is refused from the next
        // request on), and also after a failed commit, which costs only cache misses.
        stats.record_commits.fetch_add(1, Ordering::Release);
    }
    if committed && !journaled {
        if let Some(j) = journal {
            if let Err(e) = j.clear() {
                tracing::error!(error = %e, journal = %j.path().display(), "emptying the store journal failed");
            }
        }
    }
    if committed {
        // Publish the clock before anyone hears of this commit, so a reader that saw the
        // commit never sees an older clock.
        clock.fetch_max(state.clock, Ordering::Release);
        use std::sync::atomic::Ordering::Relaxed;
        stats.commits.fetch_add(1, Relaxed);
        stats.requests.fetch_add(count as u64, Relaxed);
        stats.largest_batch.fetch_max(count as u64, Relaxed);
        if journaled {
            stats.journal_records.fetch_add(1, Relaxed);
            stats.journal_syncs.fetch_add(u64::from(sync), Relaxed);
        }
        if let Some(m) = metrics {
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.commit_batch_size
                .observe(f64::from(u32::try_from(count).unwrap_or(u32::MAX)));
            if journaled {
                m.journal_records.inc();
                if sync {
                    m.journal_syncs.inc();
                }
            }
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
    if state.journal_buf.capacity() > 4 * 1024 * 1024 {
        state.journal_buf = Vec::new();
    }
    tracing::trace!(
        requests = count,
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "batch committed"
    );
    committed
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
