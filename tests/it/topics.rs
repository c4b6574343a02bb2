//! Topic and `all` pushes through real WebSocket clients: who gets them (online, offline,
//! subscribed later, another app), how devices subscribe (server API, user token, client
//! frame), cumulative topic acks, and the status of a topic push.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn topic_push_reaches_online_and_offline_subscribers_and_not_others() {
    let s = start().await;
    let (online, online_token) = s.register(None).await;
    let (offline, offline_token) = s.register(None).await;
    let (_other, other_token) = s.register(None).await;
    for d in [&online, &offline] {
        let r = s.patch_device(d, json!({"topics": ["news"]})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["topics"], json!(["news"]));
    }
    let mut on = s.connect(&online_token).await;
    let mut not_subscribed = s.connect(&other_token).await;

    // The offline subscriber also has direct messages around the topic push: its replay
    // merges mailbox and topic log in acceptance order.
    let before = s
        .push_ok(json!({"to": {"device": offline}, "notification": {"title": "before"}}))
        .await;
    let r = s
        .push_body(json!({"to": {"topic": "news"}, "notification": {"title": "headline"}}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.body["recipients"].is_null(), "topic pushes: {}", r.body);
    let topic_id = r.body["id"].as_str().unwrap().to_owned();
    let after = s
        .push_ok(json!({"to": {"device": offline}, "notification": {"title": "after"}}))
        .await;

    let got = recv_messages(&mut on, 1, WAIT).await;
    assert_eq!(got[0]["id"], topic_id.as_str());
    assert_eq!(got[0]["topic"], "news");
    assert_eq!(got[0]["notification"]["title"], "headline");
    assert_silent(&mut not_subscribed, QUIET).await;

    let mut off = s.connect(&offline_token).await;
    let got = recv_messages(&mut off, 3, WAIT).await;
    assert_eq!(ids(&got), vec![before, topic_id.clone(), after]);
    assert_silent(&mut off, QUIET).await;

    let status = s.status(&topic_id).await;
    assert_eq!(
        status["counts"]["targeted"], 2,
        "subscribers at send: {status}"
    );
    s.status_until(&topic_id, "delivered to both", |v| {
        v["counts"]["delivered"] == 2
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn all_reaches_every_device_of_the_app_and_no_other_apps() {
    let s = start().await;
    let (other_client_key, _other_api, _) = s.create_app("other").await;
    let (_o, other_token) = register_with(&s.client, &other_client_key, None).await;
    let (_a, a_token) = s.register(None).await;
    let (_b, b_token) = s.register(None).await;
    let mut a = s.connect(&a_token).await;
    let mut other = s.connect(&other_token).await;

    let r = s
        .push_body(json!({"to": {"all": true}, "data": {"k": "everyone"}}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.body["recipients"].is_null(), "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();

    let got = recv_messages(&mut a, 1, WAIT).await;
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["data"]["k"], "everyone");
    assert!(
        got[0].get("topic").is_none_or(serde_json::Value::is_null),
        "`all` is not shown as a topic: {}",
        got[0]
    );
    let mut b = s.connect(&b_token).await;
    let got = recv_messages(&mut b, 1, WAIT).await;
    assert_eq!(
        got[0]["id"],
        id.as_str(),
        "offline device gets it on connect"
    );
    assert_silent(&mut other, QUIET).await;
    assert_eq!(s.status(&id).await["counts"]["targeted"], 2);
    s.stop().await;
}

#[tokio::test]
async fn a_device_that_joins_after_a_topic_push_does_not_get_it() {
    let s = start().await;
    let (early, _early_token) = s.register(None).await;
    s.patch_device(&early, json!({"topics": ["news"]})).await;
    let old_topic = s
        .push_ok(json!({"to": {"topic": "news"}, "notification": {"title": "old news"}}))
        .await;
    let old_all = s
        .push_ok(json!({"to": {"all": true}, "notification": {"title": "old all"}}))
        .await;

    // Registered after both pushes, then subscribed to the topic.
    let (late, late_token) = s.register(None).await;
    let r = s.patch_device(&late, json!({"topics": ["news"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut conn = s.connect(&late_token).await;
    assert_silent(&mut conn, QUIET).await;

    let new_topic = s
        .push_ok(json!({"to": {"topic": "news"}, "notification": {"title": "new news"}}))
        .await;
    let new_all = s
        .push_ok(json!({"to": {"all": true}, "notification": {"title": "new all"}}))
        .await;
    let got = recv_messages(&mut conn, 2, WAIT).await;
    assert_eq!(ids(&got), vec![new_topic, new_all]);
    assert!(!ids(&got).contains(&old_topic) && !ids(&got).contains(&old_all));
    // Reconnecting replays the new ones only (they are not acked yet).
    drop(conn);
    let mut conn = s.connect(&late_token).await;
    let got = recv_messages(&mut conn, 2, WAIT).await;
    assert_eq!(got[0]["notification"]["title"], "new news");
    assert_eq!(got[1]["notification"]["title"], "new all");
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn topics_from_a_user_token_and_from_the_server_api_both_subscribe() {
    let s = start().await;
    let (client_key, api_key, secret) = s.create_app("sport").await;
    let token = user_token(
        &secret,
        &json!({"sub": "alice", "topics": ["goals"], "exp": now_secs() + 600}),
    );
    let (by_token, by_token_dev_token) = register_with(&s.client, &client_key, Some(&token)).await;
    let (by_patch, by_patch_dev_token) = register_with(&s.client, &client_key, None).await;
    let (_none, none_token) = register_with(&s.client, &client_key, None).await;
    let r = s
        .client
        .call(
            Method::PATCH,
            &format!("/v1/devices/{by_patch}"),
            Some(&api_key),
            Some(&json!({"topics": ["goals", "transfers"]})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got = s
        .client
        .call(
            Method::GET,
            &format!("/v1/devices/{by_token}"),
            Some(&api_key),
            None,
        )
        .await
        .unwrap();
    assert_eq!(got.body["topics"], json!(["goals"]), "{}", got.body);
    assert_eq!(got.body["user"], "alice");

    let mut t = s.connect(&by_token_dev_token).await;
    let mut p = s.connect(&by_patch_dev_token).await;
    let mut n = s.connect(&none_token).await;
    let push = |topic: &'static str| {
        let client = s.client.clone();
        let api_key = api_key.clone();
        async move {
            let r = client
                .call(
                    Method::POST,
                    "/v1/messages",
                    Some(&api_key),
                    Some(&json!({"to": {"topic": topic}, "data": {"t": topic}})),
                )
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        }
    };
    let goal = push("goals").await;
    let transfer = push("transfers").await;
    assert_eq!(
        ids(&recv_messages(&mut t, 1, WAIT).await),
        vec![goal.clone()]
    );
    assert_silent(&mut t, QUIET).await;
    assert_eq!(
        ids(&recv_messages(&mut p, 2, WAIT).await),
        vec![goal, transfer]
    );
    assert_silent(&mut n, QUIET).await;

    // Replacing the topic list through the API unsubscribes from the ones left out.
    let r = s
        .client
        .call(
            Method::PATCH,
            &format!("/v1/devices/{by_patch}"),
            Some(&api_key),
            Some(&json!({"topics": ["transfers"]})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let goal2 = push("goals").await;
    assert_eq!(ids(&recv_messages(&mut t, 1, WAIT).await), vec![goal2]);
    assert_silent(&mut p, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn client_subscribe_frames_are_forbidden_until_the_app_allows_them() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;

    send_frame(&mut conn, json!({"type": "subscribe", "topics": ["deals"]})).await;
    let frame = next_frame_within(&mut conn, WAIT).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "forbidden", "{frame}");
    s.push_ok(json!({"to": {"topic": "deals"}, "data": {"n": 1}}))
        .await;
    assert_silent(&mut conn, QUIET).await;

    let app = s
        .patch_app("demo", json!({"allow_client_subscribe": true}))
        .await;
    assert_eq!(app["allow_client_subscribe"], true);
    send_frame(&mut conn, json!({"type": "subscribe", "topics": ["deals"]})).await;
    eventually(WAIT, "the subscribe frame is applied", || async {
        let d = s
            .call(
                Method::GET,
                &format!("/v1/devices/{device}"),
                Some(&s.creds.api_key),
                None,
            )
            .await;
        (d.body["topics"] == json!(["deals"])).then_some(())
    })
    .await;
    let deal = s
        .push_ok(json!({"to": {"topic": "deals"}, "data": {"n": 2}}))
        .await;
    let got = recv_messages(&mut conn, 1, WAIT).await;
    assert_eq!(
        got[0]["id"],
        deal.as_str(),
        "only the push after subscribing"
    );
    assert_eq!(got[0]["data"]["n"], 2);

    // An invalid topic is refused with an error frame; the session stays up.
    send_frame(&mut conn, json!({"type": "subscribe", "topics": ["$all"]})).await;
    let frame = next_frame_within(&mut conn, WAIT).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "invalid_request", "{frame}");

    send_frame(
        &mut conn,
        json!({"type": "unsubscribe", "topics": ["deals"]}),
    )
    .await;
    eventually(WAIT, "the unsubscribe frame is applied", || async {
        let d = s
            .call(
                Method::GET,
                &format!("/v1/devices/{device}"),
                Some(&s.creds.api_key),
                None,
            )
            .await;
        (d.body["topics"] == json!([])).then_some(())
    })
    .await;
    s.push_ok(json!({"to": {"topic": "deals"}, "data": {"n": 3}}))
        .await;
    assert_silent(&mut conn, QUIET).await;
    s.stop().await;
}

#[tokio::test]
async fn topic_acks_are_cumulative() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    s.patch_device(&device, json!({"topics": ["news"]})).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            s.push_ok(json!({"to": {"topic": "news"}, "data": {"i": i}}))
                .await,
        );
    }
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, 3, WAIT).await;
    assert_eq!(ids(&got), sent);
    // Acking only the newest acknowledges everything before it in that topic.
    conn.ack(&sent[2..]).await.unwrap();
    s.status_until(&sent[2], "acked", |v| v["counts"]["acked"] == 1)
        .await;
    drop(conn);
    let mut conn = s.connect(&token).await;
    assert_silent(&mut conn, QUIET).await;

    // A newer push after the ack still arrives.
    let next = s
        .push_ok(json!({"to": {"topic": "news"}, "data": {"i": 3}}))
        .await;
    assert_eq!(ids(&recv_messages(&mut conn, 1, WAIT).await), vec![next]);
    s.stop().await;
}
