//! Store tests on a real redb file: group commit, durability across reopen, acks, refusals
//! inside a batch, expiry on read, and the schema-version guard.

use std::sync::{Arc, Mutex};

use super::records::{AppLimits, AppRecord, DeviceRecord};
use super::*;
use crate::domain::{now_ms, Notification, Platform, Priority, Target};

/// Records committed events so tests can check what the writer published.
#[derive(Default)]
struct Recorder(Mutex<Vec<Committed>>);

impl CommitListener for Recorder {
    fn committed(&self, event: &Committed) {
        self.0.lock().expect("recorder lock").push(event.clone());
    }
}

fn open(dir: &std::path::Path) -> (Store, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let store =
        Store::open(&dir.join("w.redb"), WriterConfig::default(), rec.clone()).expect("open");
    (store, rec)
}

/// App `a` with these devices (web, no user, no topics); shared with `journal_tests`.
pub(super) async fn app_with_devices(store: &Store, devices: &[&str]) {
    store
        .create_app(NewApp {
            record: AppRecord {
                name: "a".into(),
                created_at_ms: 0,
                suspended: false,
                signing_secret: "s".into(),
                limits: AppLimits::default(),
                allow_client_subscribe: false,
            },
            credentials: vec![],
        })
        .await
        .expect("app");
    for d in devices {
        register_web_device(store, d).await;
    }
}

fn push_to(device: &str, n: u32, ttl_secs: u64) -> PushOp {
    PushOp {
        app: "a".into(),
        id: format!("msg_{}x{n}", device.replace('_', "")),
        target: Target::Devices(vec![device.into()]),
        notification: Some(Notification {
            title: Some(format!("t{n}")),
            ..Notification::default()
        }),
        data: None,
        priority: Priority::Normal,
        created_at_ms: now_ms(),
        ttl_secs,
        collapse_key: None,
        send_at_ms: None,
        idempotency: None,
        mailbox_cap: 1000,
    }
}

fn far() -> u64 {
    3600
}

#[tokio::test]
async fn concurrent_pushes_share_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, rec) = open(dir.path());
    app_with_devices(&store, &["dev_1"]).await;
    let before = store
        .writer_stats()
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.push(push_to("dev_1", i, far())).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("push");
    }
    let commits = store
        .writer_stats()
        .commits
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    assert!(
        commits < 250,
        "500 concurrent pushes took {commits} commits"
    );
    let delivered = rec
        .0
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| matches!(e, Committed::Deliver { .. }))
        .count();
    assert_eq!(delivered, 500);
    store.close();
}

#[tokio::test]
async fn pending_messages_survive_reopen_in_order_and_seq_never_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last_seq;
    {
        let (store, _) = open(dir.path());
        app_with_devices(&store, &["dev_1"]).await;
        let mut seq = 0;
        for i in 0..50 {
            seq = store
                .push(push_to("dev_1", i, far()))
                .await
                .expect("push")
                .seq
                .expect("sent now");
        }
        last_seq = seq;
        store.close();
    }
    let (store, _) = open(dir.path());
    let pending = store
        .pending_after("a", "dev_1", 0, now_ms(), 1000)
        .expect("read");
    assert_eq!(pending.len(), 50);
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    let frame: serde_json::Value = serde_json::from_slice(&pending[7].frame).expect("json");
    assert_eq!(frame["notification"]["title"], "t7");
    let next = store.push(push_to("dev_1", 99, far())).await.expect("push");
    let next = next.seq.expect("sent now");
    assert!(
        next > last_seq,
        "seq {next} reused after reopen (last {last_seq})"
    );
    store.close();
}

#[tokio::test]
async fn acks_remove_entries_and_free_bodies_once_no_device_holds_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    app_with_devices(&store, &["dev_1", "dev_2"]).await;
    let mut op = push_to("dev_1", 1, far());
    op.target = Target::Devices(vec!["dev_1".into(), "dev_2".into()]);
    let reply = store.push(op).await.expect("push");
    assert_eq!(reply.recipients, Some(2));
    assert_eq!(
        store
            .ack("a", "dev_1", vec![reply.id.clone()])
            .await
            .expect("ack"),
        1
    );
    assert_eq!(
        store
            .ack("a", "dev_1", vec![reply.id.clone()])
            .await
            .expect("ack"),
        0,
        "second ack is a no-op"
    );
    assert!(store
        .pending_after("a", "dev_1", 0, now_ms(), 10)
        .expect("read")
        .is_empty());
    assert_eq!(
        store
            .pending_after("a", "dev_2", 0, now_ms(), 10)
            .expect("read")
            .len(),
        1,
        "the other device still holds it"
    );
    store
        .ack("a", "dev_2", vec![reply.id.clone()])
        .await
        .expect("ack");
    let m = store
        .message("a", &reply.id)
        .expect("read")
        .expect("record");
    assert_eq!((m.acked, m.delivered, m.pending), (2, 2, 0));
    let txn = redb::ReadableDatabase::begin_read(store.db()).expect("read");
    let bodies = txn.open_table(tables::BODIES).expect("table");
    assert!(
        redb::ReadableTable::get(&bodies, ("a", m.seq))
            .expect("get")
            .is_none(),
        "body freed"
    );
    store.close();
}

#[tokio::test]
async fn a_refused_request_in_a_batch_does_not_affect_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    app_with_devices(&store, &["dev_1"]).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = store.clone();
            let device = if i % 2 == 0 { "dev_1" } else { "dev_missing" };
            tokio::spawn(async move { s.push(push_to(device, i, far())).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            Err(StoreError::NotFound) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(
        store
            .pending_after("a", "dev_1", 0, now_ms(), 1000)
            .expect("read")
            .len(),
        50
    );
    store.close();
}

#[tokio::test]
async fn expired_entries_are_not_returned_and_ttl_zero_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, rec) = open(dir.path());
    app_with_devices(&store, &["dev_1"]).await;
    let mut short = push_to("dev_1", 1, 1);
    short.created_at_ms = 0;
    store.push(short).await.expect("push");
    let live_only = store.push(push_to("dev_1", 2, 0)).await.expect("push");
    assert_eq!(live_only.recipients, Some(1));
    assert_eq!(
        store
            .pending_after("a", "dev_1", 0, now_ms(), 10)
            .expect("read")
            .len(),
        1
    );
    assert!(
        store
            .pending_after("a", "dev_1", 0, now_ms() + 1500, 10)
            .expect("read")
            .is_empty(),
        "expired entries are skipped"
    );
    let published = rec
        .0
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| matches!(e, Committed::Deliver { .. }))
        .count();
    assert_eq!(published, 2, "TTL 0 is still offered to live sessions");
    store.close();
}

#[tokio::test]
async fn a_data_file_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        store.close();
    }
    {
        let db = redb::Database::create(dir.path().join("w.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        txn.open_table(tables::META)
            .expect("meta")
            .insert(tables::META_SCHEMA_VERSION, tables::SCHEMA_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let rec = Arc::new(Recorder::default());
    let err = Store::open(&dir.path().join("w.redb"), WriterConfig::default(), rec)
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let rec = Arc::new(Recorder::default());
    let err = Store::open(&dir.path().join("w.redb"), WriterConfig::default(), rec)
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::AlreadyOpen(_)), "{err}");
    store.close();
}

/// The `msg_recipients` rows of one message.
fn recipient_rows(store: &Store, id: &str) -> Vec<String> {
    let txn = redb::ReadableDatabase::begin_read(store.db()).expect("read");
    let table = txn.open_table(tables::MSG_RECIPIENTS).expect("table");
    redb::ReadableTable::range(&table, ("a", id, "")..)
        .expect("range")
        .map(|row| {
            let key = row.expect("row").0;
            let (a, m, d) = key.value();
            (a == "a" && m == id).then(|| d.to_owned())
        })
        .map_while(|d| d)
        .collect()
}

#[tokio::test]
async fn a_single_device_push_has_no_recipients_rows_yet_cancels_and_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    app_with_devices(&store, &["dev_1", "dev_2"]).await;
    let one = store.push(push_to("dev_1", 1, far())).await.expect("push");
    assert_eq!(one.recipients, Some(1));
    assert!(recipient_rows(&store, &one.id).is_empty());
    let mut both = push_to("dev_1", 2, far());
    both.target = Target::Devices(vec!["dev_1".into(), "dev_2".into()]);
    let both = store.push(both).await.expect("push");
    assert_eq!(recipient_rows(&store, &both.id), ["dev_1", "dev_2"]);

    // Cancel finds the single device from the record's target.
    let c = store.cancel("a", &one.id).await.expect("cancel");
    assert_eq!(c.pending, 1);
    let left = store
        .pending_after("a", "dev_1", 0, now_ms(), 10)
        .expect("read");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message_id, both.id);
    let m = store.message("a", &one.id).expect("read").expect("record");
    assert_eq!((m.cancelled, m.pending), (1, 0));

    // Expiry releases its mailbox entry and counts it.
    let short = store.push(push_to("dev_2", 3, 1)).await.expect("push");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(report.expired, 1);
    let m = store
        .message("a", &short.id)
        .expect("read")
        .expect("record");
    assert_eq!((m.expired, m.pending), (1, 0));
    assert_eq!(
        store
            .pending_after("a", "dev_2", 0, 0, 10)
            .expect("read")
            .len(),
        1,
        "only the two-device push is left for dev_2"
    );
    store.close();
}

#[tokio::test]
async fn a_recipients_row_from_an_older_store_is_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    app_with_devices(&store, &["dev_1"]).await;
    let one = store.push(push_to("dev_1", 1, far())).await.expect("push");
    {
        // Before single-device pushes went without, every direct push had its rows.
        let txn = store.db().begin_write().expect("write");
        txn.open_table(tables::MSG_RECIPIENTS)
            .expect("table")
            .insert(("a", one.id.as_str(), "dev_1"), ())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let c = store.cancel("a", &one.id).await.expect("cancel");
    assert_eq!(c.pending, 1, "one copy, listed once");
    let m = store.message("a", &one.id).expect("read").expect("record");
    assert_eq!((m.cancelled, m.pending), (1, 0));
    store.close();
}

#[tokio::test]
async fn message_records_written_as_json_by_earlier_versions_are_read_and_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    app_with_devices(&store, &["dev_1"]).await;
    let sent = store.push(push_to("dev_1", 1, far())).await.expect("push");
    let key = ("a", sent.id.as_str());
    let raw = |store: &Store| -> Vec<u8> {
        let txn = redb::ReadableDatabase::begin_read(store.db()).expect("read");
        let table = txn.open_table(tables::MESSAGES).expect("table");
        let value = table.get(key).expect("get").expect("record");
        value.value().to_vec()
    };
    assert_ne!(raw(&store).first(), Some(&b'{'), "new records are binary");
    // Turn the record into the JSON form an earlier version wrote.
    let record = store.message("a", &sent.id).expect("read").expect("record");
    {
        let txn = store.db().begin_write().expect("write");
        txn.open_table(tables::MESSAGES)
            .expect("table")
            .insert(key, serde_json::to_vec(&record).expect("json").as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    assert_eq!(raw(&store).first(), Some(&b'{'));
    assert_eq!(store.message("a", &sent.id).expect("read"), Some(record));
    // The writer reads the JSON record, updates it, and writes it back binary.
    assert_eq!(
        store
            .ack("a", "dev_1", vec![sent.id.clone()])
            .await
            .expect("ack"),
        1
    );
    assert_ne!(raw(&store).first(), Some(&b'{'));
    let after = store.message("a", &sent.id).expect("read").expect("record");
    assert_eq!((after.acked, after.pending), (1, 0));
    store.close();
}

#[tokio::test]
async fn last_seen_lives_in_its_own_row_survives_reopen_and_goes_with_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        app_with_devices(&store, &["dev_1"]).await;
        store.touch_device("a", "dev_1", 1_000).await;
        store.touch_device("a", "dev_1", 2_000).await;
        // A vanished device leaves no row behind.
        store.touch_device("a", "dev_gone", 3_000).await;
        // Ops run in order: the patch's answer comes after both touches applied.
        let patched = store
            .patch_device("a", "dev_1", DevicePatch::default())
            .await
            .expect("patch");
        assert_eq!(patched.last_seen_ms, Some(2_000));
        let read = store.device("a", "dev_1").expect("read").expect("exists");
        assert_eq!(read.last_seen_ms, Some(2_000));
        store.close();
    }
    let (store, _) = open(dir.path());
    let read = store.device("a", "dev_1").expect("read").expect("exists");
    assert_eq!(read.last_seen_ms, Some(2_000), "lost across reopen");
    store.delete_device("a", "dev_1").await.expect("delete");
    register_web_device(&store, "dev_1").await;
    register_web_device(&store, "dev_gone").await;
    for id in ["dev_1", "dev_gone"] {
        let read = store.device("a", id).expect("read").expect("exists");
        assert_eq!(read.last_seen_ms, None, "{id} inherited a last-seen row");
    }
    store.close();
}

/// Registers one more web device in the existing app `a`.
async fn register_web_device(store: &Store, id: &str) {
    store
        .register_device(NewDevice(DeviceRecord {
            id: id.into(),
            app: "a".into(),
            platform: Platform::Web,
            user: None,
            topics: vec![],
            token_sha256: String::new(),
            created_at_ms: 0,
            last_seen_ms: None,
        }))
        .await
        .expect("device");
}

/// The app and credential reads are cached; every change is seen by the next read.
#[tokio::test]
async fn cached_records_follow_every_change() {
    use super::records::{CredentialKind, CredentialRecord, Scope};
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _rec) = open(dir.path());
    app_with_devices(&store, &[]).await;
    let key = CredentialRecord {
        id: "key_1".into(),
        kind: CredentialKind::ApiKey,
        app: Some("a".into()),
        name: "k".into(),
        scopes: vec![Scope::Push],
        secret_sha256: "00".into(),
        created_at_ms: 0,
    };
    store
        .create_credential(NewCredential(key.clone()))
        .await
        .expect("key");
    // Read twice: the second read is served from the cache.
    for _ in 0..2 {
        assert_eq!(store.credential("key_1").expect("read"), Some(key.clone()));
        assert!(!store.app("a").expect("read").expect("app").suspended);
    }
    store
        .update_app("a", Box::new(|a| a.suspended = true))
        .await
        .expect("suspend");
    assert!(
        store.app("a").expect("read").expect("app").suspended,
        "a suspended app must be seen as suspended by the next read"
    );
    store.revoke_credential("a", "key_1").await.expect("revoke");
    assert_eq!(
        store.credential("key_1").expect("read"),
        None,
        "a revoked key must be gone for the next read"
    );
    store.delete_app("a").await.expect("delete");
    assert_eq!(store.app("a").expect("read"), None);
    // Pushes and acks do not invalidate: the generation stays put across them.
    app_with_devices(&store, &["dev_1"]).await;
    let generation = store
        .writer_stats()
        .record_commits
        .load(std::sync::atomic::Ordering::Acquire);
    store.push(push_to("dev_1", 1, far())).await.expect("push");
    assert_eq!(
        store
            .writer_stats()
            .record_commits
            .load(std::sync::atomic::Ordering::Acquire),
        generation
    );
}
