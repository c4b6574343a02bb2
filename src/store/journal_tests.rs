//! Journal tests on real files: a crash is a copy of the data files taken while the store
//! runs (the database file then holds only its last checkpoint, as after a kill), opened
//! again; the journal must bring back every answered write, exactly once and in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::domain::{now_ms, Notification, Priority, Target};

struct Quiet;

impl CommitListener for Quiet {
    fn committed(&self, _: &Committed) {}
}

/// A store that checkpoints only when asked to stop.
fn open_lazy(dir: &Path) -> Store {
    let config = WriterConfig {
        checkpoint_every: Duration::from_secs(600),
        ..WriterConfig::default()
    };
    Store::open(&dir.join("w.redb"), config, Arc::new(Quiet)).expect("open")
}

async fn setup(store: &Store) {
    super::tests::app_with_devices(store, &["dev_1"]).await;
}

fn push(n: u32) -> PushOp {
    PushOp {
        app: "a".into(),
        id: format!("msg_{n:04}"),
        target: Target::Devices(vec!["dev_1".into()]),
        notification: Some(Notification {
            title: Some(format!("title {n}")),
            ..Notification::default()
        }),
        data: None,
        priority: Priority::Normal,
        created_at_ms: now_ms(),
        ttl_secs: 3600,
        collapse_key: None,
        send_at_ms: None,
        idempotency: None,
        mailbox_cap: 1000,
    }
}

/// Copies the store's files as a crash would leave them.
fn crash_copy(from: &Path, to: &Path) {
    for name in ["w.redb", "w.journal"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy");
    }
}

/// The store id of the database in `dir` (which the journal's records carry).
fn store_id(dir: &Path) -> u64 {
    use redb::ReadableDatabase as _;
    let db = redb::Database::open(dir.join("w.redb")).expect("db");
    let txn = db.begin_read().expect("read");
    let meta = txn.open_table(super::tables::META).expect("meta");
    meta.get(super::tables::META_STORE_ID)
        .expect("get")
        .map(|v| v.value())
        .expect("store id")
}

fn pending_ids(store: &Store) -> Vec<String> {
    store
        .pending_after("a", "dev_1", 0, store.now_ms(), 1000)
        .expect("pending")
        .into_iter()
        .map(|e| e.message_id)
        .collect()
}

async fn pushed_and_acked(store: &Store) -> Vec<String> {
    setup(store).await;
    for n in 0..60 {
        store.push(push(n)).await.expect("push");
    }
    let acked: Vec<String> = (0..20).map(|n| format!("msg_{n:04}")).collect();
    assert_eq!(store.ack("a", "dev_1", acked).await.expect("ack"), 20);
    (20..60).map(|n| format!("msg_{n:04}")).collect()
}

#[tokio::test]
async fn a_crash_before_any_checkpoint_loses_no_answered_write() {
    let live = tempfile::tempdir().expect("dir");
    let store = open_lazy(live.path());
    let expect = pushed_and_acked(&store).await;
    assert!(
        std::fs::metadata(live.path().join("w.journal"))
            .expect("journal")
            .len()
            > 0,
        "the pushes are in the journal"
    );
    let crashed = tempfile::tempdir().expect("dir");
    crash_copy(live.path(), crashed.path());

    // Without its journal the copy holds only the app and the device: the pushes and the
    // ack are in the journal alone.
    let bare = tempfile::tempdir().expect("dir");
    std::fs::copy(live.path().join("w.redb"), bare.path().join("w.redb")).expect("copy");
    let without = open_lazy(bare.path());
    assert!(pending_ids(&without).is_empty());
    without.close();
    drop(without);

    let recovered = open_lazy(crashed.path());
    assert_eq!(pending_ids(&recovered), expect);
    let first = recovered
        .message("a", "msg_0000")
        .expect("read")
        .expect("record");
    assert_eq!(first.acked, 1, "the ack came back too");
    // The sequence counter continues after the replayed pushes: a new push sorts last.
    recovered.push(push(60)).await.expect("push");
    let ids = pending_ids(&recovered);
    assert_eq!(ids.len(), 41);
    assert_eq!(ids.last().map(String::as_str), Some("msg_0060"));
    recovered.close();
    drop(recovered);
    // Opened once more: the journal was applied and emptied once, not twice.
    let again = open_lazy(crashed.path());
    assert_eq!(pending_ids(&again).len(), 41);
    again.close();
    drop(again);
    store.close();
    drop(store);
}

#[tokio::test]
async fn a_clean_stop_checkpoints_and_empties_the_journal() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_lazy(dir.path());
    let expect = pushed_and_acked(&store).await;
    store.close();
    drop(store);
    let journal = dir.path().join("w.journal");
    assert_eq!(std::fs::metadata(&journal).expect("journal").len(), 0);
    // The database file alone now has everything.
    std::fs::remove_file(&journal).expect("remove");
    let reopened = open_lazy(dir.path());
    assert_eq!(pending_ids(&reopened), expect);
    reopened.close();
    drop(reopened);
}

#[tokio::test]
async fn a_torn_last_record_is_dropped_and_the_rest_applied() {
    let live = tempfile::tempdir().expect("dir");
    let store = open_lazy(live.path());
    setup(&store).await;
    for n in 0..5 {
        store.push(push(n)).await.expect("push");
    }
    let crashed = tempfile::tempdir().expect("dir");
    crash_copy(live.path(), crashed.path());
    store.close();
    drop(store);
    // Half a record more where the next record would go (over the zeros that end the
    // journal), as when the process died inside the write.
    let path = crashed.path().join("w.journal");
    let mut bytes = std::fs::read(&path).expect("read");
    let read_back = journal::read(&path, store_id(crashed.path())).expect("journal");
    assert_eq!(read_back.records.len(), 5, "one record per push");
    let whole = usize::try_from(read_back.good_len).expect("usize");
    let last = read_back.records.last().map_or(0, |r| r.payload.len());
    let copy = bytes[whole - last..whole].to_vec();
    let mut torn = b"WJR1".to_vec();
    torn.extend_from_slice(&u32::try_from(last).expect("u32").to_le_bytes());
    torn.extend_from_slice(&copy[..last / 2]);
    bytes[whole..whole + torn.len()].copy_from_slice(&torn);
    std::fs::write(&path, &bytes).expect("write");
    let c = journal::read(&path, store_id(crashed.path())).expect("journal");
    assert_eq!(c.records.len(), 5);
    assert!(c.torn_bytes > 0);
    let recovered = open_lazy(crashed.path());
    assert_eq!(pending_ids(&recovered).len(), 5);
    // Applied, checkpointed and emptied.
    assert_eq!(std::fs::metadata(&path).expect("journal").len(), 0);
    recovered.close();
    drop(recovered);
}

#[tokio::test]
async fn a_journal_that_does_not_follow_the_store_is_refused() {
    let live = tempfile::tempdir().expect("dir");
    let store = open_lazy(live.path());
    setup(&store).await;
    store.push(push(1)).await.expect("push");
    let crashed = tempfile::tempdir().expect("dir");
    crash_copy(live.path(), crashed.path());
    store.close();
    drop(store);

    // Another store's database next to this journal: refused, and the journal kept.
    let other = tempfile::tempdir().expect("dir");
    let fresh = open_lazy(other.path());
    fresh.close();
    drop(fresh);
    std::fs::copy(
        crashed.path().join("w.journal"),
        other.path().join("w.journal"),
    )
    .expect("copy");
    let err = Store::open(
        &other.path().join("w.redb"),
        WriterConfig::default(),
        Arc::new(Quiet),
    )
    .err()
    .expect("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Journal { .. }), "{text}");
    assert!(text.contains("another store"), "{text}");
    assert!(
        std::fs::metadata(other.path().join("w.journal"))
            .expect("kept")
            .len()
            > 0
    );
}

#[tokio::test]
async fn with_the_journal_off_commits_are_durable_in_the_database_file() {
    let dir = tempfile::tempdir().expect("dir");
    let config = WriterConfig {
        journal: false,
        ..WriterConfig::default()
    };
    let store = Store::open(&dir.path().join("w.redb"), config, Arc::new(Quiet)).expect("open");
    setup(&store).await;
    store.push(push(1)).await.expect("push");
    // A copy of the database file alone, taken while the store runs, has the push.
    let copy = tempfile::tempdir().expect("dir");
    std::fs::copy(dir.path().join("w.redb"), copy.path().join("w.redb")).expect("copy");
    assert_eq!(
        std::fs::metadata(dir.path().join("w.journal")).map_or(0, |m| m.len()),
        0
    );
    store.close();
    drop(store);
    let reopened = open_lazy(copy.path());
    assert_eq!(pending_ids(&reopened), ["msg_0001"]);
    reopened.close();
    drop(reopened);
}

#[tokio::test]
async fn acks_and_delivery_marks_are_not_synced_on_their_own_and_pushes_are() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("dir");
    let store = open_lazy(dir.path());
    setup(&store).await;
    let stats = store.writer_stats();
    let counts = || {
        (
            stats.journal_records.load(Relaxed),
            stats.journal_syncs.load(Relaxed),
        )
    };
    let before = counts();
    store.push(push(1)).await.expect("push");
    let pushed = counts();
    assert_eq!(pushed, (before.0 + 1, before.1 + 1), "a push is synced");
    assert_eq!(
        store
            .ack("a", "dev_1", vec!["msg_0001".to_owned()])
            .await
            .expect("ack"),
        1
    );
    let acked = counts();
    assert_eq!(
        acked,
        (pushed.0 + 1, pushed.1),
        "an ack alone is written, not synced"
    );
    assert!(pending_ids(&store).is_empty());
    // A crash of the process keeps what was written: the ack comes back from the journal.
    let crashed = tempfile::tempdir().expect("dir");
    crash_copy(dir.path(), crashed.path());
    let recovered = open_lazy(crashed.path());
    assert!(
        pending_ids(&recovered).is_empty(),
        "the ack was applied again"
    );
    recovered.close();
    drop(recovered);
    store.close();
    drop(store);
}

#[tokio::test]
async fn acks_wait_to_share_the_next_push_commit() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("dir");
    let config = WriterConfig {
        checkpoint_every: Duration::from_secs(600),
        lazy_hold: Duration::from_secs(600),
        ..WriterConfig::default()
    };
    let store = Store::open(&dir.path().join("w.redb"), config, Arc::new(Quiet)).expect("open");
    setup(&store).await;
    store.push(push(1)).await.expect("push");
    let commits = store.writer_stats().commits.load(Relaxed);
    let mut ack = store
        .ack_queued("a", "dev_1", vec!["msg_0001".to_owned()].into())
        .await
        .expect("queued");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        ack.try_recv().is_err(),
        "the ack waits for a commit to share"
    );
    assert_eq!(store.writer_stats().commits.load(Relaxed), commits);
    store.push(push(2)).await.expect("push");
    assert_eq!(ack.await.expect("answer").expect("ack"), 1);
    assert_eq!(
        store.writer_stats().commits.load(Relaxed),
        commits + 1,
        "the ack and the push shared one commit"
    );
    assert_eq!(pending_ids(&store), ["msg_0002"]);
    // A held ack is committed, not dropped, when the store stops.
    let mut last = store
        .ack_queued("a", "dev_1", vec!["msg_0002".to_owned()].into())
        .await
        .expect("queued");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(last.try_recv().is_err());
    store.close();
    assert_eq!(last.await.expect("answer").expect("ack"), 1);
    drop(store);
    let reopened = open_lazy(dir.path());
    assert!(pending_ids(&reopened).is_empty());
    reopened.close();
    drop(reopened);
}
