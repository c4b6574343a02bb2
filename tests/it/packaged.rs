//! A push through an installed Warbler (a .deb, or install.sh's files) that
//! `tests/packaging.sh` started: register a device, connect a WebSocket, push, receive, ack.
//! Ignored in the plain suite; the script runs it with the server's URL and files in
//! `WARBLER_TEST_URL`, `WARBLER_TEST_CA` and `WARBLER_TEST_CREDENTIALS`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{recv_messages, register_with};
use warbler::client::Client;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run tests/packaging.sh)"))
}

#[tokio::test]
#[ignore = "run by tests/packaging.sh against an installed server"]
async fn packaged_server_delivers_a_push_to_a_websocket_client() {
    let url = env("WARBLER_TEST_URL");
    let ca = PathBuf::from(env("WARBLER_TEST_CA"));
    let creds: Value = serde_json::from_slice(
        &std::fs::read(env("WARBLER_TEST_CREDENTIALS")).expect("credentials file"),
    )
    .expect("credentials JSON");
    let client = Client::new(&url, &ca).expect("client");
    let client_key = creds["client_key"].as_str().expect("client_key");
    let api_key = creds["api_key"].as_str().expect("api_key");

    let (device, token) = register_with(&client, client_key, None).await;
    let mut conn = client.connect(&token, true).await.expect("device connects");
    let reply = client
        .call(
            hyper::Method::POST,
            "/v1/messages",
            Some(api_key),
            Some(&json!({"to": {"device": device}, "notification": {"title": "installed"}})),
        )
        .await
        .expect("push");
    assert_eq!(reply.status, hyper::StatusCode::ACCEPTED, "{}", reply.body);

    let got = recv_messages(&mut conn, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0]["notification"]["title"], "installed");
    assert_eq!(got[0]["id"], reply.body["id"]);
    conn.ack(&[reply.body["id"].as_str().expect("id").to_owned()])
        .await
        .expect("ack");
    conn.close().await.expect("close");
}
