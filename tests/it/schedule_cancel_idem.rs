//! Scheduled sends (also across a restart), cancellation of scheduled and pending pushes,
//! and idempotency keys (body field and `Idempotency-Key` header).

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use warbler::domain::{format_rfc3339_ms, now_ms};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

fn fast(c: &mut warbler::config::Config) {
    c.storage.sweep_interval_ms = 50;
}

#[tokio::test]
async fn a_scheduled_push_is_sent_at_its_time_and_not_before() {
    let s = start_with(fast).await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let at = now_ms() + 2_000;
    let r = s
        .push_body(json!({"to": {"device": device}, "data": {"k": "later"},
                          "send_at": format_rfc3339_ms(at)}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["send_at"], format_rfc3339_ms(at), "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let status = s.status(&id).await;
    assert_eq!(status["state"], "scheduled", "{status}");
    assert_eq!(status["send_at"], format_rfc3339_ms(at));

    let got = recv_messages(&mut conn, 1, Duration::from_secs(6)).await;
    let arrived = now_ms();
    assert_eq!(got[0]["id"], id.as_str());
    assert!(
        arrived >= at,
        "arrived {} ms before its send time",
        at - arrived
    );
    let status = s.status(&id).await;
    assert_ne!(status["state"], "scheduled", "{status}");
    assert_eq!(status["counts"]["targeted"], 1, "{status}");
    s.stop().await;
}

#[tokio::test]
async fn a_scheduled_push_survives_a_restart() {
    let s = start_with(fast).await;
    let (device, token) = s.register(None).await;
    let at = now_ms() + 2_500;
    let id = s
        .push_ok(
            json!({"to": {"device": device}, "data": {"k": "after restart"},
                        "send_at": format_rfc3339_ms(at)}),
        )
        .await;
    let data = s.stop().await;
    assert!(now_ms() < at, "the restart began before the send time");

    let s = start_in(data, fast).await;
    assert_eq!(s.status(&id).await["state"], "scheduled");
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 1, Duration::from_secs(8)).await;
    assert!(now_ms() >= at, "not sent before its time");
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["data"]["k"], "after restart");
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn cancelling_a_scheduled_push_means_it_is_never_sent() {
    let s = start_with(fast).await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let at = now_ms() + 1_000;
    let id = s
        .push_ok(json!({"to": {"device": device}, "data": {"k": 1},
                        "send_at": format_rfc3339_ms(at)}))
        .await;
    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/messages/{id}"),
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cancelled"]["scheduled"], true, "{}", r.body);
    assert_eq!(r.body["cancelled"]["pending"], 0, "{}", r.body);
    assert_eq!(s.status(&id).await["state"], "cancelled");

    // Past the send time and several sweeps later, nothing came.
    let left = at.saturating_sub(now_ms());
    assert_silent(&mut conn, Duration::from_millis(left + 700)).await;
    assert_eq!(s.status(&id).await["state"], "cancelled");
    s.stop().await;
}

#[tokio::test]
async fn cancelling_a_direct_push_removes_its_undelivered_copies() {
    let s = start().await;
    let (online, online_token) = s.register(None).await;
    let (off1, off1_token) = s.register(None).await;
    let (off2, off2_token) = s.register(None).await;
    let mut on = s.connect(&online_token).await;
    let r = s
        .push_body(json!({"to": {"devices": [online, off1, off2]}, "data": {"k": "oops"}}))
        .await;
    assert_eq!(r.body["recipients"], 3, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ids(&recv_messages(&mut on, 1, WAIT).await),
        vec![id.clone()]
    );
    s.status_until(&id, "delivered to the online device", |v| {
        v["counts"]["delivered"] == 1
    })
    .await;

    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/messages/{id}"),
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cancelled"]["pending"], 2, "{}", r.body);
    assert_eq!(r.body["cancelled"]["scheduled"], false, "{}", r.body);
    let status = s.status(&id).await;
    assert_eq!(status["state"], "cancelled", "{status}");
    assert_eq!(status["counts"]["cancelled"], 2, "{status}");

    for token in [&off1_token, &off2_token] {
        let mut conn = s.connect(token).await;
        assert_silent(&mut conn, QUIET).await;
    }
    // Cancelling again finds nothing left to cancel.
    let again = s
        .call(
            Method::DELETE,
            &format!("/v1/messages/{id}"),
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["cancelled"]["pending"], 0, "{}", again.body);
    s.stop().await;
}

#[tokio::test]
async fn cancelling_a_push_to_one_device_removes_its_copy() {
    // A push to exactly one device keeps no recipients index; its target names the device.
    let s = start().await;
    let (off, off_token) = s.register(None).await;
    let r = s
        .push_body(json!({"to": {"device": off}, "data": {"k": "oops"}}))
        .await;
    assert_eq!(r.body["recipients"], 1, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/messages/{id}"),
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cancelled"]["pending"], 1, "{}", r.body);
    let status = s.status(&id).await;
    assert_eq!(status["state"], "cancelled", "{status}");
    assert_eq!(status["counts"]["cancelled"], 1, "{status}");
    assert_eq!(status["target"], format!("device:{off}"), "{status}");
    let mut conn = s.connect(&off_token).await;
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn another_apps_message_cannot_be_seen_or_cancelled() {
    let s = start().await;
    let (_client_key, other_key, _) = s.create_app("other").await;
    let (device, token) = s.register(None).await;
    let id = s
        .push_ok(json!({"to": {"device": device}, "data": {"k": "mine"}}))
        .await;
    for method in [Method::DELETE, Method::GET] {
        let r = s
            .call(
                method.clone(),
                &format!("/v1/messages/{id}"),
                Some(&other_key),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "not_found");
    }
    let r = s
        .call(
            Method::DELETE,
            "/v1/messages/msg_doesnotexist",
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // Still delivered to its device.
    let mut conn = s.connect(&token).await;
    assert_eq!(ids(&recv_messages(&mut conn, 1, WAIT).await), vec![id]);
    s.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_answer_and_sends_once() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let body = json!({"to": {"device": device}, "data": {"order": 42},
                      "idempotency_key": "order-42"});
    let first = s.push_body(body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let second = s.push_body(body.clone()).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.body);
    assert_eq!(second.body, first.body, "the first answer again");

    // The same key in the header, with the same request otherwise, is the same request.
    let auth = format!("Bearer {}", s.creds.api_key);
    let mut without_field = body.clone();
    without_field
        .as_object_mut()
        .unwrap()
        .remove("idempotency_key");
    let third = s
        .request(
            Method::POST,
            "/v1/messages",
            &[("authorization", &auth), ("idempotency-key", "order-42")],
            Some(without_field.clone()),
        )
        .await;
    assert_eq!(third.status, StatusCode::ACCEPTED, "{:?}", third.body);
    assert_eq!(third.body, first.body);

    let got = recv_messages(&mut conn, 1, WAIT).await;
    assert_eq!(got[0]["id"], first.body["id"]);
    assert_silent(&mut conn, QUIET).await;
    assert_eq!(
        s.status(first.body["id"].as_str().unwrap()).await["counts"]["targeted"],
        1
    );

    // A header-only key works on its own too.
    let h1 = s
        .request(
            Method::POST,
            "/v1/messages",
            &[("authorization", &auth), ("idempotency-key", "header-only")],
            Some(json!({"to": {"device": device}, "data": {"h": 1}})),
        )
        .await;
    let h2 = s
        .request(
            Method::POST,
            "/v1/messages",
            &[("authorization", &auth), ("idempotency-key", "header-only")],
            Some(json!({"to": {"device": device}, "data": {"h": 1}})),
        )
        .await;
    assert_eq!(h1.status, StatusCode::ACCEPTED, "{:?}", h1.body);
    assert_eq!(h2.body, h1.body);
    assert_eq!(
        ids(&recv_messages(&mut conn, 1, WAIT).await),
        vec![h1.body["id"].as_str().unwrap().to_owned()]
    );
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_with_a_different_request_is_a_conflict() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let first = s
        .push_body(json!({"to": {"device": device}, "data": {"v": 1}, "idempotency_key": "k"}))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let other = s
        .push_body(json!({"to": {"device": device}, "data": {"v": 2}, "idempotency_key": "k"}))
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.body);
    assert_eq!(other.body["error"]["code"], "conflict");
    let auth = format!("Bearer {}", s.creds.api_key);
    let by_header = s
        .request(
            Method::POST,
            "/v1/messages",
            &[("authorization", &auth), ("idempotency-key", "k")],
            Some(json!({"to": {"device": device}, "data": {"v": 3}})),
        )
        .await;
    assert_eq!(
        by_header.status,
        StatusCode::CONFLICT,
        "{:?}",
        by_header.body
    );
    assert_eq!(by_header.body["error"]["code"], "conflict");
    // Only the first was sent.
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 1, WAIT).await;
    assert_eq!(got[0]["data"]["v"], 1);
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn retrying_a_scheduled_push_returns_the_same_answer_with_its_send_time() {
    let s = start_with(fast).await;
    let (device, token) = s.register(None).await;
    let at = now_ms() + 1_500;
    let body = json!({"to": {"device": device}, "data": {"k": "once"},
                      "send_at": format_rfc3339_ms(at), "idempotency_key": "sched-1"});
    let first = s.push_body(body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let retry = s.push_body(body.clone()).await;
    assert_eq!(retry.body, first.body, "the first answer, send_at included");
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 1, Duration::from_secs(6)).await;
    assert_eq!(got[0]["id"], first.body["id"]);
    // A retry after it was sent still sends nothing more.
    let late = s.push_body(body).await;
    assert_eq!(late.body["id"], first.body["id"]);
    assert_silent(&mut conn, Duration::from_millis(500)).await;
    s.stop().await;
}
