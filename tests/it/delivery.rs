//! Delivery over WebSocket: order, acks, status counts, user targets, session lifecycle.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn online_device_gets_direct_pushes_in_order_and_acks_them() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    assert_eq!(conn.device_id, device);
    let mut sent = Vec::new();
    for i in 0..20 {
        let r = s.push(json!({"device": device}), &format!("n{i}")).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["recipients"], 1);
        sent.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let got = recv_messages(&mut conn, 20, Duration::from_secs(10)).await;
    assert_eq!(ids(&got), sent, "delivered in acceptance order");
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases: {seqs:?}"
    );
    assert_eq!(got[3]["notification"]["title"], "n3");
    conn.ack(&sent).await.unwrap();
    conn.opened(&sent[19..]).await.unwrap();
    // Acks are durable once the writer commits them; poll the status until it says so.
    let mut status = json!(null);
    for _ in 0..100 {
        status = s
            .call(
                Method::GET,
                &format!("/v1/messages/{}", sent[19]),
                Some(&s.creds.api_key),
                None,
            )
            .await
            .body;
        if status["state"] == "acked" && status["counts"]["opened"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["state"], "acked", "{status}");
    assert_eq!(status["counts"]["targeted"], 1);
    assert_eq!(status["counts"]["delivered"], 1);
    assert_eq!(status["counts"]["acked"], 1);
    assert_eq!(status["counts"]["opened"], 1);
    // Acked messages are not replayed on reconnect.
    drop(conn);
    let mut again = s.connect(&token).await;
    assert_silent(&mut again, Duration::from_millis(300)).await;
    s.stop().await;
}

#[tokio::test]
async fn unacked_messages_are_replayed_on_reconnect_before_new_ones() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let first = s.push(json!({"device": device}), "one").await.body["id"].clone();
    let got = recv_messages(&mut conn, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0]["id"], first);
    conn.close().await.unwrap();
    let second = s.push(json!({"device": device}), "two").await.body["id"].clone();
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 2, Duration::from_secs(5)).await;
    assert_eq!(got[0]["id"], first, "the unacked one again, first");
    assert_eq!(got[1]["id"], second);
    s.stop().await;
}

#[tokio::test]
async fn user_target_reaches_every_device_bound_by_a_user_token() {
    let s = start().await;
    let apps = s
        .call(
            Method::POST,
            "/v1/apps",
            Some(&s.creds.admin_token),
            Some(json!({"name": "chat"})),
        )
        .await;
    assert_eq!(apps.status, StatusCode::CREATED, "{}", apps.body);
    let secret = apps.body["signing_secret"].as_str().unwrap().to_owned();
    let client_key = apps.body["client_key"].as_str().unwrap().to_owned();
    let key = s
        .call(
            Method::POST,
            "/v1/apps/chat/keys",
            Some(&s.creds.admin_token),
            Some(json!({"name": "backend", "scopes": ["push", "read", "manage"]})),
        )
        .await
        .body["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = user_token(&secret, &json!({"sub": "alice", "exp": now_secs() + 600}));
    let bob = user_token(&secret, &json!({"sub": "bob", "exp": now_secs() + 600}));
    let (_a1, t1) = register_with(&s.client, &client_key, Some(&alice)).await;
    let (_a2, t2) = register_with(&s.client, &client_key, Some(&alice)).await;
    let (_b1, t3) = register_with(&s.client, &client_key, Some(&bob)).await;
    let mut c1 = s.connect(&t1).await;
    let mut c3 = s.connect(&t3).await;
    let r = s
        .client
        .call(
            Method::POST,
            "/v1/messages",
            Some(&key),
            Some(&json!({"to": {"user": "alice"}, "data": {"k": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["recipients"], 2);
    let got = recv_messages(&mut c1, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0]["data"]["k"], 1);
    assert_silent(&mut c3, Duration::from_millis(300)).await;
    // The offline second device of alice gets it when it connects.
    let mut c2 = s.connect(&t2).await;
    let got = recv_messages(&mut c2, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0]["id"], r.body["id"]);
    let listed = s
        .client
        .call(Method::GET, "/v1/users/alice/devices", Some(&key), None)
        .await
        .unwrap();
    assert_eq!(listed.body["devices"].as_array().unwrap().len(), 2);
    let users = s
        .client
        .call(
            Method::POST,
            "/v1/messages",
            Some(&key),
            Some(&json!({"to": {"users": ["alice", "bob", "carol"]}, "data": {}})),
        )
        .await
        .unwrap();
    assert_eq!(users.body["recipients"], 3);
    s.stop().await;
}

#[tokio::test]
async fn token_can_come_in_a_hello_frame_and_bad_tokens_are_refused() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let conn = s.client.connect(&token, false).await.expect("hello works");
    assert_eq!(conn.device_id, device);
    conn.close().await.unwrap();
    // A bad token in the header is refused before the upgrade.
    let Err(err) = s.client.open_ws(Some("wdt_dev_nope_nope")).await else {
        panic!("a bad token must be refused");
    };
    assert!(err.to_string().contains("401"), "{err}");
    // A bad token in hello closes with 4001.
    let mut ws = s.client.open_ws(None).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type":"hello","token":"wdt_dev_x_y"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut code = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = msg {
            code = Some(u16::from(f.code));
        }
    }
    assert_eq!(code, Some(4001));
    s.stop().await;
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_and_deleting_the_device_closes_it() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut old = s.connect(&token).await;
    let mut new = s.connect(&token).await;
    assert!(
        old.next_frame().await.unwrap().is_none(),
        "old session closed"
    );
    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/devices/{device}"),
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        new.next_frame().await.unwrap().is_none(),
        "deleted device's session closed"
    );
    let again = s.client.open_ws(Some(&token)).await;
    assert!(again.is_err(), "a deleted device's token no longer works");
    s.stop().await;
}

#[tokio::test]
async fn suspending_an_app_closes_its_sessions_and_refuses_its_keys() {
    let s = start().await;
    let (_device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let r = s
        .call(
            Method::PATCH,
            "/v1/apps/demo",
            Some(&s.creds.admin_token),
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        conn.next_frame().await.unwrap().is_none(),
        "session closed at once"
    );
    let push = s.push(json!({"device": "dev_abc"}), "x").await;
    assert_eq!(push.status, StatusCode::FORBIDDEN);
    assert!(s.client.open_ws(Some(&token)).await.is_err());
    let r = s
        .call(
            Method::PATCH,
            "/v1/apps/demo",
            Some(&s.creds.admin_token),
            Some(json!({"suspended": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(s.client.connect(&token, true).await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away() {
    let s = start().await;
    let (_device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    s.shutdown.cancel();
    use futures_util::StreamExt;
    let mut code = None;
    while let Some(Ok(msg)) = conn.ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = msg {
            code = Some(u16::from(f.code));
        }
    }
    assert_eq!(code, Some(1001));
    tokio::time::timeout(Duration::from_secs(15), s.task)
        .await
        .expect("drains")
        .unwrap();
}

#[tokio::test]
async fn a_received_but_unacked_message_counts_as_delivered_after_the_grace_period() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let id = s.push(json!({"device": device}), "no ack").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    recv_messages(&mut conn, 1, Duration::from_secs(5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = s
            .call(
                Method::GET,
                &format!("/v1/messages/{id}"),
                Some(&s.creds.api_key),
                None,
            )
            .await
            .body;
        if st["counts"]["delivered"] == 1 {
            assert_eq!(st["state"], "delivered");
            assert_eq!(st["counts"]["acked"], 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted as delivered: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}
