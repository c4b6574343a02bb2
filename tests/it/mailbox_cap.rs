//! The per-device mailbox cap: past it the oldest messages are dropped, and the device is
//! told how many in a `gap` frame — once — never a silent loss.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

async fn cap_demo_mailbox(s: &TestServer, cap: u64) {
    let app = s
        .patch_app("demo", json!({"limits": {"mailbox_cap": cap}}))
        .await;
    assert_eq!(app["limits"]["mailbox_cap"], cap, "{app}");
}

async fn push_n(s: &TestServer, device: &str, n: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for i in 0..n {
        sent.push(
            s.push_ok(json!({"to": {"device": device}, "data": {"i": i}}))
                .await,
        );
    }
    sent
}

#[tokio::test]
async fn a_full_mailbox_drops_the_oldest_and_says_so_in_one_gap_frame() {
    let s = start().await;
    cap_demo_mailbox(&s, 5).await;
    let (device, token) = s.register(None).await;
    let sent = push_n(&s, &device, 8).await;

    let mut conn = s.connect(&token).await;
    let first = next_frame_within(&mut conn, WAIT).await;
    assert_eq!(first, json!({"type": "gap", "dropped": 3}));
    let got = recv_messages(&mut conn, 5, WAIT).await;
    assert_eq!(ids(&got), sent[3..].to_vec(), "the 5 newest, in order");
    assert_silent(&mut conn, QUIET).await;
    for old in &sent[..3] {
        let st = s.status(old).await;
        assert_eq!(st["counts"]["dropped"], 1, "{st}");
        assert_eq!(st["counts"]["delivered"], 0, "{st}");
    }
    // Delivery marks are written after the gap is cleared; once the newest counts as
    // delivered, the gap is known to be told.
    s.status_until(&sent[7], "delivered", |v| v["counts"]["delivered"] == 1)
        .await;
    drop(conn);

    // Not acked, so replayed again — without a second gap frame.
    let mut conn = s.connect(&token).await;
    let first = next_frame_within(&mut conn, WAIT).await;
    assert_eq!(first["type"], "message", "no second gap: {first}");
    assert_eq!(first["id"], sent[3].as_str());
    let rest = recv_messages(&mut conn, 4, WAIT).await;
    assert_eq!(ids(&rest), sent[4..].to_vec());
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn acked_messages_make_room_so_nothing_is_dropped() {
    let s = start().await;
    cap_demo_mailbox(&s, 5).await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    for round in 0..3 {
        let sent = push_n(&s, &device, 4).await;
        let got = recv_messages(&mut conn, 4, WAIT).await;
        assert_eq!(ids(&got), sent, "round {round}");
        conn.ack(&sent).await.unwrap();
        s.status_until(&sent[3], "acked", |v| v["counts"]["acked"] == 1)
            .await;
    }
    // 12 messages passed through a mailbox of 5 without a gap.
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn a_connected_device_that_does_not_ack_is_told_of_the_gap_live() {
    let s = start().await;
    cap_demo_mailbox(&s, 5).await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let sent = push_n(&s, &device, 5).await;
    assert_eq!(ids(&recv_messages(&mut conn, 5, WAIT).await), sent);
    // The sixth pushes the oldest (written, never acked) out of the mailbox.
    let sixth = s
        .push_ok(json!({"to": {"device": device}, "data": {"i": 5}}))
        .await;
    let gap = next_frame_within(&mut conn, WAIT).await;
    assert_eq!(gap, json!({"type": "gap", "dropped": 1}));
    let got = recv_messages(&mut conn, 1, WAIT).await;
    assert_eq!(ids(&got), vec![sixth]);
    assert_silent(&mut conn, QUIET).await;
    assert_eq!(s.status(&sent[0]).await["counts"]["dropped"], 1);
    s.stop().await;
}

#[tokio::test]
async fn long_poll_clients_get_the_gap_first_too() {
    let s = start().await;
    cap_demo_mailbox(&s, 5).await;
    let (device, token) = s.register(None).await;
    let sent = push_n(&s, &device, 7).await;
    let r = s.poll(&token, "wait=0").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let frames = r.body.as_array().expect("array").clone();
    assert_eq!(frames[0], json!({"type": "gap", "dropped": 2}));
    assert_eq!(ids(&frames[1..]), sent[2..].to_vec());
    s.stop().await;
}
