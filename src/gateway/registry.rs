//! Device → live session. The store's writer hands every committed delivery here, in commit
//! order; each session gets the same encoded `Bytes` frame through its bounded outbox.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use prometheus_client::metrics::counter::Counter;

use crate::store::tables::ALL_TOPIC;
use crate::store::{CommitListener, Committed};

/// One message queued for a session. Sessions get it as [`Shared`]: one allocation per
/// message, however many sessions it goes to.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub seq: u64,
    pub expires_at_ms: u64,
    pub frame: Bytes,
    /// The topic log it belongs to (acks move the topic cursor); `None` for the mailbox.
    pub topic: Option<Arc<str>>,
    /// The message id; `None` for frames that are not messages (`gap`).
    pub id: Option<Arc<str>>,
}

/// A queued message as sessions hold it: a broadcast to 10,000 devices is one `Outgoing`
/// and 10,000 pointer copies (an outbox slot is one pointer wide, not the whole struct).
pub type Shared = Arc<Outgoing>;

/// Why a session was told to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection of the same device took over.
    Replaced,
    /// The device was deleted.
    DeviceRemoved,
    /// The app was suspended or deleted.
    AppClosed,
    /// The server is shutting down.
    ServerStopping,
}

impl CloseReason {
    const ALL: [Self; 4] = [
        Self::Replaced,
        Self::DeviceRemoved,
        Self::AppClosed,
        Self::ServerStopping,
    ];

    fn code(self) -> u8 {
        match self {
            Self::Replaced => 1,
            Self::DeviceRemoved => 2,
            Self::AppClosed => 3,
            Self::ServerStopping => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The registry's side of one live session.
pub struct SessionHandle {
    /// The device this session serves: the key its app's session set finds it by.
    device: Box<str>,
    /// The outbox: at most `capacity` frames; it allocates only while it holds some.
    queue: Mutex<VecDeque<Shared>>,
    capacity: u32,
    lagged: AtomicBool,
    /// Whether the registry knows this session's topics (from a commit or the first read).
    topics_set: AtomicBool,
    /// When the session's next timer is due, in ms on the registry's clock (`u64::MAX`:
    /// none); the registry's ticker sets `ticked` and wakes the session then.
    due_ms: AtomicU64,
    ticked: AtomicBool,
    /// Wakes the session's task when `lagged`, `closing` or `ticked` is set.
    wake: AtomicWaker,
    closing: AtomicBool,
    /// The first close reason given (`CloseReason as u8 + 1`; 0: none).
    reason: AtomicU8,
}

impl SessionHandle {
    /// Whether the outbox overflowed since the last call; clears the flag.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }

    /// Ready once the outbox overflowed (the flag stays set for [`Self::take_lagged`]).
    /// One task waits on a handle: the session's own.
    pub fn poll_lagged(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.wake.register(cx.waker());
        if self.lagged.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Asks the registry's ticker to wake the session at `at_ms` (see [`Registry::clock_ms`]).
    pub fn wake_at(&self, at_ms: u64) {
        self.due_ms.store(at_ms, Ordering::Release);
    }

    /// Ready once the timer set by [`Self::wake_at`] fired (clears it).
    pub fn poll_tick(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.wake.register(cx.waker());
        if self.ticked.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Ready with the reason once the registry wants this session closed.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<Option<CloseReason>> {
        self.wake.register(cx.waker());
        if self.closing.load(Ordering::Acquire) {
            Poll::Ready(CloseReason::from_code(self.reason.load(Ordering::Acquire)))
        } else {
            Poll::Pending
        }
    }

    /// Resolves when the registry wants this session closed.
    pub async fn closed(&self) -> Option<CloseReason> {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    fn close_with(&self, reason: CloseReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire);
        self.closing.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Queues `item`; true when the outbox was full and this made the session fall behind
    /// (it will read the store to catch up), false when it was queued or already behind.
    fn offer(&self, item: Shared) -> bool {
        let mut queue = lock_ignoring_poison(&self.queue);
        if queue.len() >= self.capacity as usize {
            drop(queue);
            let was_behind = self.lagged.swap(true, Ordering::AcqRel);
            self.wake.wake();
            return !was_behind;
        }
        queue.push_back(item);
        drop(queue);
        self.wake.wake();
        false
    }

    /// Makes the session read the store again (outbox overflow, or a gap to report).
    fn wake_to_catch_up(&self) {
        self.lagged.store(true, Ordering::Release);
        self.wake.wake();
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The session's end of its outbox.
pub struct Outbox {
    handle: Arc<SessionHandle>,
}

/// An outbox that held more than this many slots gives its memory back once drained.
const OUTBOX_KEEP: usize = 64;

impl Outbox {
    /// The next queued frame; pending (and woken by the next offer) while there is none.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Shared> {
        self.handle.wake.register(cx.waker());
        match self.try_recv() {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }

    /// The next queued frame, if any.
    pub fn try_recv(&mut self) -> Option<Shared> {
        let mut queue = lock_ignoring_poison(&self.handle.queue);
        let item = queue.pop_front();
        if queue.is_empty() && queue.capacity() > OUTBOX_KEEP {
            *queue = VecDeque::new();
        }
        item
    }

    /// Moves up to `max` queued frames, oldest first, to the end of `into`, under one lock
    /// (not one per frame: the writer thread offers into the same queue meanwhile).
    pub fn take_into(&mut self, into: &mut Vec<Shared>, max: usize) {
        let mut queue = lock_ignoring_poison(&self.handle.queue);
        let n = queue.len().min(max);
        into.extend(queue.drain(..n));
        if queue.is_empty() && queue.capacity() > OUTBOX_KEEP {
            *queue = VecDeque::new();
        }
    }

    /// Waits for the next queued frame.
    pub async fn recv(&mut self) -> Option<Shared> {
        Some(std::future::poll_fn(|cx| self.poll_recv(cx)).await)
    }
}

/// A session in its app's set, found by its device id. The handle carries the id, so a
/// slot of the set is one pointer (8 bytes), not a key string and a pointer (32): the set
/// has a slot per connection and doubles in size past 14,336 of them.
struct ByDevice(Arc<SessionHandle>);

impl Borrow<str> for ByDevice {
    fn borrow(&self) -> &str {
        &self.0.device
    }
}

impl PartialEq for ByDevice {
    fn eq(&self, other: &Self) -> bool {
        self.0.device == other.0.device
    }
}

impl Eq for ByDevice {}

impl Hash for ByDevice {
    // The same hash as the `&str` it is looked up by (what `Borrow` requires).
    fn hash<H: Hasher>(&self, state: &mut H) {
        str::hash(&self.0.device, state);
    }
}

/// The live sessions of one app, and which online devices follow which topic.
#[derive(Default)]
struct AppSessions {
    devices: HashSet<ByDevice>,
    /// topic → online devices subscribed to it (`$all` is implicit: every device).
    followers: HashMap<String, HashSet<String>>,
    /// device → its topics, to undo `followers` when it leaves or changes.
    topics_of: HashMap<String, Vec<String>>,
}

impl AppSessions {
    fn set_topics(&mut self, device: &str, topics: Vec<String>) {
        self.forget_topics(device);
        for t in &topics {
            self.followers
                .entry(t.clone())
                .or_default()
                .insert(device.to_owned());
        }
        // Most devices follow no topic: no entry for them (a key and a slot per idle
        // connection otherwise).
        if !topics.is_empty() {
            self.topics_of.insert(device.to_owned(), topics);
        }
    }

    fn forget_topics(&mut self, device: &str) {
        for t in self.topics_of.remove(device).unwrap_or_default() {
            if let Some(set) = self.followers.get_mut(&t) {
                set.remove(device);
                if set.is_empty() {
                    self.followers.remove(&t);
                }
            }
        }
    }

    fn remove(&mut self, device: &str) -> Option<Arc<SessionHandle>> {
        self.forget_topics(device);
        self.devices.take(device).map(|b| b.0)
    }

    fn session(&self, device: &str) -> Option<&Arc<SessionHandle>> {
        self.devices.get(device).map(|b| &b.0)
    }

    fn sessions(&self) -> impl Iterator<Item = &Arc<SessionHandle>> {
        self.devices.iter().map(|b| &b.0)
    }
}

/// All live sessions of this process, by app and device.
pub struct Registry {
    // A std mutex: held only for map operations and non-blocking `try_send`s, never across
    // an await, so contention stays short.
    apps: Mutex<HashMap<String, AppSessions>>,
    /// Set by [`Registry::close_all`]: sessions registering afterwards are closed at once.
    stopping: AtomicBool,
    /// The start of the clock session timers are set on.
    epoch: std::time::Instant,
    /// Times a session's outbox overflowed (`warbler_session_outbox_overflows_total`).
    overflows: Counter,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            apps: Mutex::default(),
            stopping: AtomicBool::new(false),
            epoch: std::time::Instant::now(),
            overflows: Counter::default(),
        }
    }
}

/// How often the registry's ticker looks for sessions whose timer is due: the precision of
/// heartbeats and delivery grace periods. One ticker serves every session, so an idle
/// session keeps no timer of its own.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(250);

impl Registry {
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A registry that counts outbox overflows on `overflows` (a metric's counter).
    #[must_use]
    pub fn counting_overflows(overflows: Counter) -> Arc<Self> {
        Arc::new(Self {
            overflows,
            ..Self::default()
        })
    }

    /// Times a live session's outbox was full, so that it fell behind and read the store
    /// to catch up.
    #[must_use]
    pub fn outbox_overflows(&self) -> u64 {
        self.overflows.get()
    }

    fn count_overflows(&self, n: u64) {
        if n > 0 {
            self.overflows.inc_by(n);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, AppSessions>> {
        // Every operation under this lock is a few map inserts/removes that cannot leave the
        // maps inconsistent if a panic interrupted them, so a poisoned lock is still usable.
        self.apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milliseconds since the registry started: the clock of [`SessionHandle::wake_at`].
    #[must_use]
    pub fn clock_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Wakes every session whose timer is due; returns how many it woke.
    pub fn wake_due(&self) -> usize {
        let now = self.clock_ms();
        let apps = self.lock();
        let mut woken = 0;
        for h in apps.values().flat_map(AppSessions::sessions) {
            if h.due_ms.load(Ordering::Acquire) <= now {
                h.due_ms.store(u64::MAX, Ordering::Release);
                h.ticked.store(true, Ordering::Release);
                h.wake.wake();
                woken += 1;
            }
        }
        woken
    }

    /// Runs [`Registry::wake_due`] every [`TICK`] until `shutdown`.
    pub async fn run_ticker(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {
                    self.wake_due();
                }
            }
        }
    }

    /// Tells every live session, and any that registers from now on, to close.
    pub fn close_all(&self, reason: CloseReason) {
        self.stopping.store(true, Ordering::Release);
        let apps = self.lock();
        for h in apps.values().flat_map(AppSessions::sessions) {
            h.close_with(reason);
        }
    }

    /// Registers a session for a device, closing any older one of the same device.
    /// Register before reading the store: whatever commits afterwards reaches the outbox.
    pub fn register(
        &self,
        app: &str,
        device: &str,
        capacity: usize,
    ) -> (Arc<SessionHandle>, Outbox) {
        let handle = Arc::new(SessionHandle {
            device: device.into(),
            queue: Mutex::new(VecDeque::new()),
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            lagged: AtomicBool::new(false),
            topics_set: AtomicBool::new(false),
            due_ms: AtomicU64::new(u64::MAX),
            ticked: AtomicBool::new(false),
            wake: AtomicWaker::new(),
            closing: AtomicBool::new(false),
            reason: AtomicU8::new(0),
        });
        let old = {
            let mut apps = self.lock();
            let sessions = apps.entry(app.to_owned()).or_default();
            sessions.forget_topics(device);
            sessions
                .devices
                .replace(ByDevice(Arc::clone(&handle)))
                .map(|b| b.0)
        };
        let outbox = Outbox {
            handle: Arc::clone(&handle),
        };
        if self.stopping.load(Ordering::Acquire) {
            handle.close_with(CloseReason::ServerStopping);
        }
        if let Some(old) = old {
            old.close_with(CloseReason::Replaced);
        }
        (handle, outbox)
    }

    /// Sets a new session's topics as read from the store after registering, unless a
    /// change committed since then already set them.
    pub fn initial_topics(
        &self,
        app: &str,
        device: &str,
        handle: &SessionHandle,
        topics: Vec<String>,
    ) {
        let mut apps = self.lock();
        let Some(sessions) = apps.get_mut(app) else {
            return;
        };
        let current = sessions
            .session(device)
            .is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), handle));
        if current && !handle.topics_set.swap(true, Ordering::AcqRel) {
            sessions.set_topics(device, topics);
        }
    }

    /// Removes the session if it is still the registered one for its device.
    pub fn unregister(&self, app: &str, device: &str, handle: &SessionHandle) {
        let mut apps = self.lock();
        let Some(sessions) = apps.get_mut(app) else {
            return;
        };
        if sessions
            .session(device)
            .is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), handle))
        {
            sessions.remove(device);
            if sessions.devices.is_empty() {
                apps.remove(app);
            }
        }
    }

    /// Whether a device has a live session here.
    #[must_use]
    pub fn is_online(&self, app: &str, device: &str) -> bool {
        self.lock()
            .get(app)
            .is_some_and(|s| s.devices.contains(device))
    }

    /// Live sessions of one app in this process.
    #[must_use]
    pub fn app_sessions(&self, app: &str) -> usize {
        self.lock().get(app).map_or(0, |s| s.devices.len())
    }

    /// Live sessions in this process.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().values().map(|s| s.devices.len()).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CommitListener for Registry {
    fn committed(&self, event: &Committed) {
        match event {
            Committed::Deliver {
                app,
                id,
                devices,
                seq,
                expires_at_ms,
                frame,
            } => {
                let apps = self.lock();
                let Some(sessions) = apps.get(app) else {
                    return;
                };
                let item = Arc::new(Outgoing {
                    seq: *seq,
                    expires_at_ms: *expires_at_ms,
                    frame: frame.clone(),
                    topic: None,
                    id: Some(Arc::from(id.as_str())),
                });
                let mut fell_behind = 0;
                for device in devices {
                    if let Some(handle) = sessions.session(device) {
                        fell_behind += u64::from(handle.offer(Arc::clone(&item)));
                    }
                }
                self.count_overflows(fell_behind);
            }
            Committed::Broadcast {
                app,
                id,
                topic,
                seq,
                expires_at_ms,
                frame,
            } => {
                let apps = self.lock();
                let Some(sessions) = apps.get(app) else {
                    return;
                };
                let item = Arc::new(Outgoing {
                    seq: *seq,
                    expires_at_ms: *expires_at_ms,
                    frame: frame.clone(),
                    topic: Some(Arc::from(topic.as_str())),
                    id: Some(Arc::from(id.as_str())),
                });
                let mut fell_behind = 0;
                if topic == ALL_TOPIC {
                    for handle in sessions.sessions() {
                        fell_behind += u64::from(handle.offer(Arc::clone(&item)));
                    }
                } else if let Some(followers) = sessions.followers.get(topic) {
                    for device in followers {
                        if let Some(handle) = sessions.session(device) {
                            fell_behind += u64::from(handle.offer(Arc::clone(&item)));
                        }
                    }
                }
                self.count_overflows(fell_behind);
            }
            Committed::TopicsChanged {
                app,
                device,
                topics,
            } => {
                let mut apps = self.lock();
                if let Some(sessions) = apps.get_mut(app) {
                    if let Some(handle) = sessions.session(device) {
                        handle.topics_set.store(true, Ordering::Release);
                        sessions.set_topics(device, topics.clone());
                    }
                }
            }
            Committed::Gap { app, device } => {
                let apps = self.lock();
                if let Some(handle) = apps.get(app).and_then(|s| s.session(device)) {
                    handle.wake_to_catch_up();
                }
            }
            Committed::DeviceRemoved { app, device } => {
                let removed = self.lock().get_mut(app).and_then(|s| s.remove(device));
                if let Some(h) = removed {
                    h.close_with(CloseReason::DeviceRemoved);
                }
            }
            Committed::AppClosed { app } => {
                let removed = self.lock().remove(app);
                for h in removed
                    .into_iter()
                    .flat_map(|s| s.devices.into_iter().map(|b| b.0))
                {
                    h.close_with(CloseReason::AppClosed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(seq: u64, devices: &[&str]) -> Committed {
        Committed::Deliver {
            app: "a".into(),
            id: format!("msg_{seq}"),
            devices: devices.iter().map(|d| (*d).to_owned()).collect(),
            seq,
            expires_at_ms: u64::MAX,
            frame: Bytes::from_static(b"{}"),
        }
    }

    fn broadcast(seq: u64, topic: &str) -> Committed {
        Committed::Broadcast {
            app: "a".into(),
            id: format!("msg_{seq}"),
            topic: topic.into(),
            seq,
            expires_at_ms: u64::MAX,
            frame: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn broadcasts_reach_followers_of_the_topic_and_all_reaches_everyone() {
        let r = Registry::new();
        let (h1, mut rx1) = r.register("a", "d1", 8);
        let (h2, mut rx2) = r.register("a", "d2", 8);
        r.initial_topics("a", "d1", &h1, vec!["news".into()]);
        r.initial_topics("a", "d2", &h2, vec![]);
        r.committed(&broadcast(1, "news"));
        r.committed(&broadcast(2, ALL_TOPIC));
        assert_eq!(rx1.recv().await.unwrap().seq, 1);
        assert_eq!(rx1.recv().await.unwrap().seq, 2);
        let only = rx2.recv().await.unwrap();
        assert_eq!((only.seq, only.topic.as_deref()), (2, Some(ALL_TOPIC)));
        // A committed change wins over a stale first read.
        r.committed(&Committed::TopicsChanged {
            app: "a".into(),
            device: "d2".into(),
            topics: vec!["news".into()],
        });
        r.initial_topics("a", "d2", &h2, vec![]);
        r.committed(&broadcast(3, "news"));
        assert_eq!(rx2.recv().await.unwrap().seq, 3);
    }

    #[tokio::test]
    async fn deliveries_reach_only_registered_devices_in_order() {
        let r = Registry::new();
        let (_h, mut rx) = r.register("a", "d1", 8);
        r.committed(&deliver(1, &["d1", "d2"]));
        r.committed(&deliver(2, &["d1"]));
        assert_eq!(rx.recv().await.unwrap().seq, 1);
        assert_eq!(rx.recv().await.unwrap().seq, 2);
    }

    #[tokio::test]
    async fn overflow_sets_lagged_instead_of_blocking() {
        let r = Registry::new();
        let (h, _rx) = r.register("a", "d1", 1);
        r.committed(&deliver(1, &["d1"]));
        assert!(!h.take_lagged());
        r.committed(&deliver(2, &["d1"]));
        assert!(h.take_lagged());
        assert!(!h.take_lagged());
    }

    #[tokio::test]
    async fn a_new_session_replaces_the_old_one() {
        let r = Registry::new();
        let (old, _rx1) = r.register("a", "d1", 1);
        let (new, _rx2) = r.register("a", "d1", 1);
        assert_eq!(old.closed().await, Some(CloseReason::Replaced));
        r.unregister("a", "d1", &old);
        assert!(r.is_online("a", "d1"));
        r.unregister("a", "d1", &new);
        assert!(!r.is_online("a", "d1"));
    }

    #[tokio::test]
    async fn the_ticker_wakes_only_sessions_whose_timer_is_due() {
        let r = Registry::new();
        let (soon, _o1) = r.register("a", "d1", 1);
        let (later, _o2) = r.register("a", "d2", 1);
        let (never, _o3) = r.register("a", "d3", 1);
        soon.wake_at(r.clock_ms());
        later.wake_at(r.clock_ms() + 60_000);
        assert_eq!(r.wake_due(), 1, "only the due one");
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(soon.poll_tick(&mut cx).is_ready());
        assert!(soon.poll_tick(&mut cx).is_pending(), "a tick is taken once");
        assert!(later.poll_tick(&mut cx).is_pending());
        assert!(never.poll_tick(&mut cx).is_pending());
        assert_eq!(r.wake_due(), 0, "a fired timer does not fire again");
    }
}
