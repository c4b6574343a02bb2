//! `POST /v1/messages/batch`: many pushes in one request, each to its own target; the batch
//! is checked whole (a bad item, a bad shape or too many pushes change nothing), then each
//! push is stored on its own and answered in order.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

async fn batch(s: &TestServer, body: Value) -> warbler::client::Reply {
    s.call(
        Method::POST,
        "/v1/messages/batch",
        Some(&s.creds.api_key),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn each_push_reaches_its_own_device_and_an_unknown_device_is_answered_in_place() {
    let s = start().await;
    let (a, a_token) = s.register(None).await;
    let (b, b_token) = s.register(None).await;
    let mut conn_a = s.connect(&a_token).await;
    let mut conn_b = s.connect(&b_token).await;
    let r = batch(
        &s,
        json!({"messages": [
            {"to": {"device": a}, "data": {"for": "a"}},
            {"to": {"device": "dev_nobody"}, "data": {"for": "nobody"}},
            {"to": {"device": b}, "notification": {"title": "for b"}, "ttl": 60},
            {"to": {"devices": [a, b]}, "data": {"for": "both"}},
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["accepted"], 3, "{}", r.body);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["recipients"], 1);
    assert_eq!(results[1]["error"]["code"], "not_found", "{}", r.body);
    assert_eq!(results[2]["recipients"], 1);
    assert_eq!(results[3]["recipients"], 2);

    let got_a = recv_messages(&mut conn_a, 2, WAIT).await;
    assert_eq!(
        ids(&got_a),
        vec![
            results[0]["id"].as_str().unwrap().to_owned(),
            results[3]["id"].as_str().unwrap().to_owned()
        ]
    );
    assert_eq!(got_a[0]["data"]["for"], "a");
    let got_b = recv_messages(&mut conn_b, 2, WAIT).await;
    assert_eq!(got_b[0]["notification"]["title"], "for b");
    assert_eq!(got_b[1]["data"]["for"], "both");
    assert_silent(&mut conn_a, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn a_bad_item_or_a_bad_batch_is_refused_whole_and_sends_nothing() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let good = json!({"to": {"device": device}, "data": {"k": 1}});
    let cases = [
        (
            json!({"messages": [good, {"to": {"device": device}}]}),
            StatusCode::BAD_REQUEST,
            "messages[1]: a message needs notification, data or both",
        ),
        (
            json!({"messages": [good, {"to": {"device": device}, "data": {}, "color": 1}]}),
            StatusCode::BAD_REQUEST,
            "messages[1]: ",
        ),
        (
            json!({"messages": [good, {"to": {"device": device}, "data": {}, "ttl": 999_999_999}]}),
            StatusCode::BAD_REQUEST,
            "messages[1]: ttl",
        ),
        (
            json!({"messages": []}),
            StatusCode::BAD_REQUEST,
            "messages: 1 to 500",
        ),
        (
            json!({"messages": vec![good.clone(); 501]}),
            StatusCode::BAD_REQUEST,
            "messages: 1 to 500",
        ),
        (
            json!({"message": [good]}),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (json!([good]), StatusCode::BAD_REQUEST, "invalid JSON body"),
    ];
    for (body, status, message) in cases {
        let r = batch(&s, body).await;
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request", "{}", r.body);
        let text = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{text:?} should contain {message:?}"
        );
    }
    let auth = format!("Bearer {}", s.creds.api_key);
    let r = s
        .request(
            Method::POST,
            "/v1/messages/batch",
            &[("authorization", &auth), ("idempotency-key", "whole")],
            Some(json!({"messages": [good]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_silent(&mut conn, QUIET).await;

    // Without the push scope, nothing either.
    let r = s
        .call(
            Method::POST,
            "/v1/messages/batch",
            Some(&s.creds.client_key),
            Some(json!({"messages": [good]})),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.body);
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn item_idempotency_keys_replay_the_first_answer_and_send_once() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let body = json!({"messages": [
        {"to": {"device": device}, "data": {"n": 1}, "idempotency_key": "order-1"},
        {"to": {"device": device}, "data": {"n": 2}, "idempotency_key": "order-2"},
    ]});
    let first = batch(&s, body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let again = batch(&s, body).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["results"], first.body["results"]);
    let got = recv_messages(&mut conn, 2, WAIT).await;
    assert_eq!(got[0]["data"]["n"], 1);
    assert_eq!(got[1]["data"]["n"], 2);
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn a_batch_takes_its_size_from_the_rate_budget() {
    let s = start_with(|c| c.limits.pushes_per_second = 3).await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let push = json!({"to": {"device": device}, "data": {"k": 1}});
    // More than one second's worth can never pass.
    let r = batch(&s, json!({"messages": vec![push.clone(); 4]})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // Three pass, and leave nothing for a fourth right away.
    let r = batch(&s, json!({"messages": vec![push.clone(); 3]})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = batch(&s, json!({"messages": [push]})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    recv_messages(&mut conn, 3, WAIT).await;
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}
