//! Online backup while pushes keep coming, offline restore into a new data dir, and the
//! restored node replaying pending messages to devices.

use std::collections::HashSet;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_node_that_replays_pending_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let server = BinaryServer::start(&a);
    let client = server.client();
    let creds = server.creds();
    let (device, token) = register_with(&client, &creds.client_key, None).await;
    let push = |client: warbler::client::Client, key: String, device: String, tag: String| async move {
        let r = client
            .call(
                Method::POST,
                "/v1/messages",
                Some(&key),
                Some(&json!({"to": {"device": device}, "data": {"tag": tag}})),
            )
            .await
            .expect("push");
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    };
    let mut before = HashSet::new();
    for i in 0..100 {
        before.insert(
            push(
                client.clone(),
                creds.api_key.clone(),
                device.clone(),
                format!("b{i}"),
            )
            .await,
        );
    }
    // Keep pushing while the backup is taken.
    let load = {
        let (client, key, device) = (client.clone(), creds.api_key.clone(), device.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..200 {
                ids.push(push(client.clone(), key.clone(), device.clone(), format!("l{i}")).await);
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, archive) = client
        .download("/v1/admin/backup", Some(&creds.admin_token))
        .await
        .expect("backup");
    assert_eq!(status, StatusCode::OK);
    assert!(archive.len() > 10_000, "archive of {} bytes", archive.len());
    let during: HashSet<String> = load.await.expect("load").into_iter().collect();
    let (denied, _) = client
        .download("/v1/admin/backup", Some(&creds.api_key))
        .await
        .expect("request");
    assert_eq!(
        denied,
        StatusCode::FORBIDDEN,
        "API keys cannot take backups"
    );
    let file = dir.path().join("backup.tar");
    std::fs::write(&file, &archive).expect("write archive");

    // Restore refuses a non-empty dir, then rebuilds a new one.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_warbler"))
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data")
        .arg(&a)
        .output()
        .expect("restore");
    assert_eq!(
        refused.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let b = dir.path().join("b");
    let restored = std::process::Command::new(env!("CARGO_BIN_EXE_warbler"))
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data")
        .arg(&b)
        .output()
        .expect("restore");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    drop(server);

    // The restored node knows the device and replays what was pending at the snapshot.
    let node = BinaryServer::start(&b);
    let client = node.client();
    let mut conn = client
        .connect(&token, true)
        .await
        .expect("the restored node knows the device");
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), conn.next_frame()).await {
            Ok(Ok(Some(f))) if f["type"] == "message" => got.push(f),
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
    }
    let ids: Vec<String> = got
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, once each");
    let got_set: HashSet<String> = ids.iter().cloned().collect();
    assert!(
        before.is_subset(&got_set),
        "every push accepted before the backup is replayed"
    );
    assert!(
        got_set
            .iter()
            .all(|id| before.contains(id) || during.contains(id)),
        "nothing unknown"
    );
    // The restored node serves the same keys.
    let status = client
        .call(
            Method::GET,
            &format!("/v1/messages/{}", ids[0]),
            Some(&creds.api_key),
            None,
        )
        .await
        .expect("status");
    assert_eq!(status.status, StatusCode::OK);
}
