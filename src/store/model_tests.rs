//! A model check of the queue: random sequences of direct and topic pushes, acks, sweeps,
//! clock jumps and restarts run against the real store on disk and against a small
//! in-memory model; after every step each device's pending list and gap count must match.
//! (It found that the writer answered before publishing its clock, so a reader could see a
//! commit made at a jumped clock and still read the older time.)

use std::sync::Arc;

use proptest::prelude::*;

use super::records::{AppLimits, AppRecord, DeviceRecord};
use super::*;
use crate::domain::{Notification, Platform, Priority, Target};

const DEVICES: [&str; 3] = ["dev_a", "dev_b", "dev_c"];
/// dev_a and dev_b follow the topic; dev_c does not.
const FOLLOWS: [bool; 3] = [true, true, false];
const CAP: u64 = 4;
const SHORT_TTL: u64 = 1800;
const LONG_TTL: u64 = 100 * 24 * 3600;
const JUMP_MS: u64 = 3_600_000;

#[derive(Debug, Clone)]
enum Action {
    Direct { device: usize, short: bool },
    Topic { short: bool },
    Ack { device: usize, nth: usize },
    Sweep,
    Jump,
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..3usize, any::<bool>()).prop_map(|(device, short)| Action::Direct { device, short }),
        2 => any::<bool>().prop_map(|short| Action::Topic { short }),
        3 => (0..3usize, 0..4usize).prop_map(|(device, nth)| Action::Ack { device, nth }),
        1 => Just(Action::Sweep),
        1 => Just(Action::Jump),
        1 => Just(Action::Restart),
    ]
}

struct NoListener;
impl CommitListener for NoListener {
    fn committed(&self, _: &Committed) {}
}

#[derive(Debug, Clone)]
struct Msg {
    id: String,
    seq: u64,
    expires_at: u64,
}

#[derive(Default)]
struct Model {
    /// Stored mailbox entries per device (expired ones stay until a sweep).
    mailbox: [Vec<Msg>; 3],
    topic_log: Vec<Msg>,
    cursor: [u64; 3],
    gap: [u64; 3],
}

impl Model {
    fn pending(&self, d: usize, now: u64) -> Vec<String> {
        let mut out: Vec<&Msg> = self.mailbox[d]
            .iter()
            .filter(|m| m.expires_at > now)
            .collect();
        if FOLLOWS[d] {
            out.extend(
                self.topic_log
                    .iter()
                    .filter(|m| m.seq > self.cursor[d] && m.expires_at > now),
            );
        }
        out.sort_by_key(|m| m.seq);
        out.into_iter().map(|m| m.id.clone()).collect()
    }

    fn sweep(&mut self, now: u64) {
        for mb in &mut self.mailbox {
            mb.retain(|m| m.expires_at > now);
        }
        self.topic_log.retain(|m| m.expires_at > now);
    }
}

fn open(path: &std::path::Path) -> Store {
    Store::open(path, WriterConfig::default(), Arc::new(NoListener)).expect("open")
}

async fn setup(store: &Store) {
    store
        .create_app(NewApp {
            record: AppRecord {
                name: "m".into(),
                created_at_ms: 0,
                suspended: false,
                signing_secret: String::new(),
                limits: AppLimits::default(),
                allow_client_subscribe: false,
            },
            credentials: vec![],
        })
        .await
        .expect("app");
    for (i, d) in DEVICES.iter().enumerate() {
        let topics = if FOLLOWS[i] {
            vec!["t".to_owned()]
        } else {
            vec![]
        };
        store
            .register_device(NewDevice(DeviceRecord {
                id: (*d).into(),
                app: "m".into(),
                platform: Platform::Iot,
                user: None,
                topics,
                token_sha256: String::new(),
                created_at_ms: 0,
                last_seen_ms: None,
            }))
            .await
            .expect("device");
    }
}

fn push(id: String, target: Target, ttl_secs: u64) -> PushOp {
    PushOp {
        app: "m".into(),
        id,
        target,
        notification: Some(Notification::default()),
        data: None,
        priority: Priority::Normal,
        created_at_ms: 0,
        ttl_secs,
        collapse_key: None,
        send_at_ms: None,
        idempotency: None,
        mailbox_cap: CAP,
    }
}

fn ids_of(entries: &[PendingEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.frame).expect("frame json");
            v["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

async fn run(actions: Vec<Action>) -> Result<(), TestCaseError> {
    let all = format!("{actions:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.redb");
    let mut store = open(&path);
    setup(&store).await;
    let mut model = Model::default();
    let mut n = 0u32;
    for (step, action) in actions.into_iter().enumerate() {
        match action {
            Action::Direct { device, short } => {
                n += 1;
                let ttl = if short { SHORT_TTL } else { LONG_TTL };
                let id = format!("msg_{n}");
                let now = store.now_ms();
                let r = store
                    .push(push(
                        id.clone(),
                        Target::Devices(vec![DEVICES[device].into()]),
                        ttl,
                    ))
                    .await
                    .expect("push");
                let mb = &mut model.mailbox[device];
                while mb.len() as u64 >= CAP {
                    mb.remove(0);
                    model.gap[device] += 1;
                }
                mb.push(Msg {
                    id,
                    seq: r.seq.expect("sent"),
                    expires_at: now + ttl * 1000,
                });
            }
            Action::Topic { short } => {
                n += 1;
                let ttl = if short { SHORT_TTL } else { LONG_TTL };
                let id = format!("msg_{n}");
                let now = store.now_ms();
                let r = store
                    .push(push(id.clone(), Target::Topic("t".into()), ttl))
                    .await
                    .expect("push");
                model.topic_log.push(Msg {
                    id,
                    seq: r.seq.expect("sent"),
                    expires_at: now + ttl * 1000,
                });
            }
            Action::Ack { device, nth } => {
                let now = store.now_ms();
                let pending = model.pending(device, now);
                if let Some(id) = pending.get(nth) {
                    store
                        .ack("m", DEVICES[device], vec![id.clone()])
                        .await
                        .expect("ack");
                    if let Some(pos) = model.mailbox[device].iter().position(|m| &m.id == id) {
                        model.mailbox[device].remove(pos);
                    } else if let Some(m) = model.topic_log.iter().find(|m| &m.id == id) {
                        model.cursor[device] = model.cursor[device].max(m.seq);
                    }
                }
            }
            Action::Sweep => {
                store.sweep().await.expect("sweep");
                model.sweep(store.now_ms());
            }
            Action::Jump => {
                let target = store.now_ms() + JUMP_MS;
                let (tx, rx) = tokio::sync::oneshot::channel();
                store
                    .inner
                    .ops
                    .send(writer::Op::Sweep {
                        now_ms: target,
                        reply: tx,
                    })
                    .await
                    .expect("send");
                rx.await.expect("reply").expect("sweep");
                model.sweep(store.now_ms());
            }
            Action::Restart => {
                store.close();
                drop(store);
                store = open(&path);
            }
        }
        let now = store.now_ms();
        for (d, name) in DEVICES.iter().enumerate() {
            let got = ids_of(
                &store
                    .pending_after("m", name, 0, now, 10_000)
                    .expect("read"),
            );
            prop_assert_eq!(
                &got,
                &model.pending(d, now),
                "step {} device {} in {}",
                step,
                name,
                all
            );
            prop_assert_eq!(
                store.gap("m", name).expect("gap"),
                model.gap[d],
                "gap of {}",
                name
            );
        }
    }
    store.close();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_queue_matches_its_model_under_random_operations(actions in prop::collection::vec(action(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(actions))?;
    }
}

#[test]
fn model_pending_merges_mailbox_and_topic_in_seq_order() {
    let mut m = Model::default();
    m.mailbox[0].push(Msg {
        id: "msg_2".into(),
        seq: 2,
        expires_at: 10,
    });
    m.topic_log.push(Msg {
        id: "msg_1".into(),
        seq: 1,
        expires_at: 10,
    });
    m.topic_log.push(Msg {
        id: "msg_3".into(),
        seq: 3,
        expires_at: 10,
    });
    m.cursor[0] = 1;
    assert_eq!(
        m.pending(0, 5),
        vec!["msg_2".to_owned(), "msg_3".to_owned()]
    );
    assert_eq!(m.pending(2, 5), Vec::<String>::new());
}
