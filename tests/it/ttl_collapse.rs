//! TTL and collapse keys, seen by an offline device when it connects: `ttl: 0` is never
//! stored, short TTLs expire (also across a restart), a newer collapse key replaces an older
//! undelivered message (direct and topic), and the status counts say what happened.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

#[tokio::test]
async fn offline_device_replays_exactly_what_collapse_and_ttl_leave() {
    let s = start_with(|c| c.storage.sweep_interval_ms = 50).await;
    let (device, token) = s.register(None).await;
    let (online, online_token) = s.register(None).await;
    let mut on = s.connect(&online_token).await;
    let to = json!({"device": device});

    let n1 = s
        .push_ok(json!({"to": to, "notification": {"title": "n1"}}))
        .await;
    let c1 = s
        .push_ok(json!({"to": to, "notification": {"title": "score 1-0"}, "collapse_key": "score"}))
        .await;
    let r = s
        .push_body(json!({"to": {"devices": [device, online]}, "notification": {"title": "now or never"}, "ttl": 0}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["recipients"], 2);
    let live_only = r.body["id"].as_str().unwrap().to_owned();
    let short = s
        .push_ok(json!({"to": to, "notification": {"title": "short"}, "ttl": 1}))
        .await;
    let c2 = s
        .push_ok(json!({"to": to, "notification": {"title": "score 2-0"}, "collapse_key": "score"}))
        .await;
    let n2 = s
        .push_ok(json!({"to": to, "notification": {"title": "n2"}}))
        .await;

    // The connected device gets the ttl 0 push at once.
    let got = recv_messages(&mut on, 1, WAIT).await;
    assert_eq!(got[0]["id"], live_only.as_str());

    // The collapsed one is replaced at once; the short one expires after its second.
    let replaced = s.status(&c1).await;
    assert_eq!(replaced["counts"]["replaced"], 1, "{replaced}");
    let expired = s
        .status_until(&short, "expired by the sweep", |v| {
            v["counts"]["expired"] == 1
        })
        .await;
    assert_eq!(expired["state"], "expired", "{expired}");

    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 3, WAIT).await;
    assert_eq!(
        ids(&got),
        vec![n1, c2.clone(), n2],
        "titles: {:?}",
        got.iter()
            .map(|m| m["notification"]["title"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(got[1]["notification"]["title"], "score 2-0");
    assert_silent(&mut conn, QUIET).await;

    let newer = s.status(&c2).await;
    assert_eq!(newer["collapse_key"], "score");
    assert_eq!(newer["counts"]["replaced"], 0);
    let never = s
        .status_until(&live_only, "delivered to the connected device", |v| {
            v["counts"]["delivered"] == 1
        })
        .await;
    assert_eq!(never["counts"]["targeted"], 2, "{never}");
    s.stop().await;
}

#[tokio::test]
async fn a_delivered_message_is_not_replaced_by_a_newer_one_with_its_collapse_key() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let first = s
        .push_ok(json!({"to": {"device": device}, "data": {"v": 1}, "collapse_key": "k"}))
        .await;
    assert_eq!(
        ids(&recv_messages(&mut conn, 1, WAIT).await),
        vec![first.clone()]
    );
    s.status_until(&first, "delivered", |v| v["counts"]["delivered"] == 1)
        .await;
    drop(conn);
    let second = s
        .push_ok(json!({"to": {"device": device}, "data": {"v": 2}, "collapse_key": "k"}))
        .await;
    assert_eq!(s.status(&first).await["counts"]["replaced"], 0);
    // Both are pending (the first was written but never acked): at-least-once wins.
    let mut conn = s.connect(&token).await;
    assert_eq!(
        ids(&recv_messages(&mut conn, 2, WAIT).await),
        vec![first, second]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_newer_topic_message_replaces_an_older_one_with_the_same_collapse_key() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    s.patch_device(&device, json!({"topics": ["weather"]}))
        .await;
    let old = s
        .push_ok(json!({"to": {"topic": "weather"}, "data": {"t": 10}, "collapse_key": "today"}))
        .await;
    let other = s
        .push_ok(json!({"to": {"topic": "weather"}, "data": {"alert": true}}))
        .await;
    let new = s
        .push_ok(json!({"to": {"topic": "weather"}, "data": {"t": 12}, "collapse_key": "today"}))
        .await;
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 2, WAIT).await;
    assert_eq!(ids(&got), vec![other, new]);
    assert_eq!(got[1]["data"]["t"], 12);
    assert_silent(&mut conn, QUIET).await;
    assert_eq!(s.status(&old).await["counts"]["replaced"], 1);
    s.stop().await;
}

#[tokio::test]
async fn ttl_zero_to_a_topic_reaches_online_subscribers_only() {
    let s = start().await;
    let (a, a_token) = s.register(None).await;
    let (b, b_token) = s.register(None).await;
    for d in [&a, &b] {
        s.patch_device(d, json!({"topics": ["live"]})).await;
    }
    let mut on = s.connect(&a_token).await;
    let id = s
        .push_ok(json!({"to": {"topic": "live"}, "data": {"goal": 1}, "ttl": 0}))
        .await;
    assert_eq!(ids(&recv_messages(&mut on, 1, WAIT).await), vec![id]);
    let mut off = s.connect(&b_token).await;
    assert_silent(&mut off, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn expired_messages_are_never_delivered_even_after_a_restart_before_the_sweep() {
    // A long sweep interval: after the restart nothing has swept the message yet, so
    // only the read path's expiry check keeps it from the device.
    let s = start_with(|c| c.storage.sweep_interval_ms = 3_600_000).await;
    let (device, token) = s.register(None).await;
    let short = s
        .push_ok(json!({"to": {"device": device}, "data": {"k": "short"}, "ttl": 1}))
        .await;
    let long = s
        .push_ok(json!({"to": {"device": device}, "data": {"k": "long"}}))
        .await;
    let topic_short = {
        s.patch_device(&device, json!({"topics": ["t"]})).await;
        s.push_ok(json!({"to": {"topic": "t"}, "data": {"k": "topic short"}, "ttl": 1}))
            .await
    };
    let data = s.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let s = start_in(data, |c| c.storage.sweep_interval_ms = 3_600_000).await;
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 1, WAIT).await;
    assert_eq!(ids(&got), vec![long]);
    assert_silent(&mut conn, QUIET).await;
    assert_eq!(s.status(&short).await["state"], "expired");
    assert_eq!(s.status(&topic_short).await["state"], "expired");
    drop(conn);

    // Restarted again with a fast sweep: the sweep counts them as expired.
    let data = s.stop().await;
    let s = start_in(data, |c| c.storage.sweep_interval_ms = 50).await;
    s.status_until(&short, "counted as expired", |v| {
        v["counts"]["expired"] == 1
    })
    .await;
    s.status_until(&topic_short, "counted as expired", |v| {
        v["counts"]["expired"] == 1
    })
    .await;
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 1, WAIT).await;
    assert_eq!(got[0]["data"]["k"], "long", "the unacked long one only");
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}
