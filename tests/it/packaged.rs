//! A push through an installed Warbler (a .deb, or install.sh's files) that
//! `tests/packaging.sh` started: register a device, connect a WebSocket, push, receive, ack.
//! Ignored in the plain suite; the script runs it with the server's URL and files in
//! `WARBLER_TEST_URL`, `WARBLER_TEST_CA` and `WARBLER_TEST_CREDENTIALS`. The upgrade test
//! stays connected while the script upgrades in place (it writes `WARBLER_TEST_READY` when
//! the script may stop the old server).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{ids, recv_messages, register_with};
use warbler::client::Client;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run tests/packaging.sh)"))
}

#[tokio::test]
#[ignore = "run by tests/packaging.sh against an installed server"]
async fn packaged_server_delivers_a_push_to_a_websocket_client() {
    let (client, creds) = installed_client();
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

#[tokio::test]
#[ignore = "run by tests/packaging.sh while it upgrades an installed server in place"]
async fn packaged_upgrade_loses_nothing_and_the_client_resumes() {
    let (client, creds) = installed_client();
    let client_key = creds["client_key"].as_str().expect("client_key");
    let api_key = creds["api_key"].as_str().expect("api_key");
    let (device, token) = register_with(&client, client_key, None).await;
    let push = |title: &'static str| {
        let client = client.clone();
        let device = device.clone();
        async move {
            let body = json!({"to": {"device": device}, "notification": {"title": title}});
            let r = client
                .call(
                    hyper::Method::POST,
                    "/v1/messages",
                    Some(api_key),
                    Some(&body),
                )
                .await
                .expect("push");
            assert_eq!(r.status, hyper::StatusCode::ACCEPTED, "{}", r.body);
            r.body["id"].clone()
        }
    };
    // Two pushes while the device is offline, one while it is online; none is acked.
    let mut want = vec![push("offline 1").await, push("offline 2").await];
    let mut conn = client.connect(&token, true).await.expect("device connects");
    recv_messages(&mut conn, 2, Duration::from_secs(10)).await;
    want.push(push("online").await);
    recv_messages(&mut conn, 1, Duration::from_secs(10)).await;

    // Tell the script to upgrade; the old server's SIGTERM ends this connection.
    std::fs::write(env("WARBLER_TEST_READY"), "ready").expect("ready file");
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(_)) = conn.next_frame().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection did not end during the upgrade"
    );

    // Reconnect as a client does: on any failure (the old server refusing or cutting a
    // connection while it drains, the new one not listening yet), try again; until one
    // connection has replayed everything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no complete replay within 60 s of the upgrade"
        );
        let Ok(mut conn) = client.connect(&token, true).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut got = Vec::new();
        while got.len() < want.len() {
            match tokio::time::timeout(Duration::from_secs(10), conn.next_frame()).await {
                Ok(Ok(Some(frame))) if frame["type"] == "message" => got.push(frame),
                Ok(Ok(Some(_))) => {}
                _ => break,
            }
        }
        if got.len() == want.len() {
            conn.ack(&ids(&got)).await.expect("ack");
            conn.close().await.expect("close");
            break got;
        }
    };
    let got_ids: Vec<Value> = got.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(
        got_ids, want,
        "every accepted, unacked message comes back, in order"
    );
}

fn installed_client() -> (Client, Value) {
    let url = env("WARBLER_TEST_URL");
    let ca = PathBuf::from(env("WARBLER_TEST_CA"));
    let creds: Value = serde_json::from_slice(
        &std::fs::read(env("WARBLER_TEST_CREDENTIALS")).expect("credentials file"),
    )
    .expect("credentials JSON");
    (Client::new(&url, &ca).expect("client"), creds)
}
