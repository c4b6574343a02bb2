//! The console's recent-messages list names each push by its title, also once every
//! recipient acked it and its body is gone from the store.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn recent_messages_keep_the_title_after_the_body_is_released() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let long = "é".repeat(300);
    let short = s
        .push(json!({"device": device}), "<b>Sale</b> ends today")
        .await;
    assert_eq!(short.status, StatusCode::ACCEPTED, "{}", short.body);
    let cut = s.push(json!({"device": device}), &long).await;
    assert_eq!(cut.status, StatusCode::ACCEPTED, "{}", cut.body);
    let ids = [
        short.body["id"].as_str().expect("id").to_owned(),
        cut.body["id"].as_str().expect("id").to_owned(),
    ];
    let mut conn = s.connect(&token).await;
    recv_messages(&mut conn, 2, Duration::from_secs(10)).await;
    conn.ack(&ids).await.expect("ack");
    for id in &ids {
        s.status_until(id, "acked", |v| v["state"] == "acked").await;
    }
    let list = s
        .call(
            Method::GET,
            "/v1/apps/demo/messages",
            Some(&s.creds.admin_token),
            None,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let messages = list.body["messages"].as_array().expect("messages");
    let title_of = |id: &str| {
        messages
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["title"].clone())
            .expect("listed")
    };
    assert_eq!(title_of(&ids[0]), "<b>Sale</b> ends today");
    // Kept to its first 120 characters (not bytes: never split inside a character).
    assert_eq!(title_of(&ids[1]), "é".repeat(120));
    s.stop().await;
}
