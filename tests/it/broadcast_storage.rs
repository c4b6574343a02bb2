//! Broadcasts are stored once, not once per device: the data dir barely grows with the
//! audience.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::harness::*;

const DEVICES: usize = 2_000;
const BROADCASTS: usize = 40;
const KIB: u64 = 1024;

/// About 2 KiB of JSON data.
fn payload(i: usize) -> serde_json::Value {
    json!({"i": i, "blob": "x".repeat(2000)})
}

/// Waits until the data dir stops changing size (the writer and redb settled).
async fn settled_size(dir: &std::path::Path) -> u64 {
    let mut last = dir_size(dir);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = dir_size(dir);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcasts_do_not_grow_storage_with_the_audience() {
    let s = start_with(|c| c.storage.sweep_interval_ms = 50).await;
    // Register the audience through the API, 50 at a time.
    let mut tokens = Vec::with_capacity(DEVICES);
    for _ in 0..DEVICES / 50 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                let client = s.client.clone();
                let key = s.creds.client_key.clone();
                tokio::spawn(async move { register_with(&client, &key, None).await })
            })
            .collect();
        for t in batch {
            tokens.push(t.await.expect("register task"));
        }
    }
    let before = settled_size(s.data.path()).await;

    let mut sent = Vec::new();
    for i in 0..BROADCASTS {
        let r = s
            .push_body(json!({"to": {"all": true}, "data": payload(i)}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        sent.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let after = settled_size(s.data.path()).await;
    let growth = after.saturating_sub(before);
    eprintln!(
        "{BROADCASTS} broadcasts of ~2 KiB to {DEVICES} devices: data dir {before} -> {after} bytes (+{growth})"
    );
    // Stored per device this would be 40 × 2,000 × 2 KiB = 160 MB; stored once it is the
    // 40 bodies (80 KiB) plus index entries. 1 MiB leaves room for redb's page allocation.
    assert!(
        growth < 1024 * KIB,
        "data dir grew by {growth} bytes for {BROADCASTS} broadcasts"
    );
    assert_eq!(
        s.status(&sent[0]).await["counts"]["targeted"],
        DEVICES as u64,
        "every device is in the audience"
    );

    // The broadcasts are really stored: the first and the last registered device, both
    // offline until now, get all 40 with their full data.
    for (_, token) in [&tokens[0], &tokens[DEVICES - 1]] {
        let mut conn = s.connect(token).await;
        let got = recv_messages(&mut conn, BROADCASTS, Duration::from_secs(20)).await;
        assert_eq!(ids(&got), sent);
        assert_eq!(got[39]["data"], payload(39));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_pushes_store_one_body_and_a_small_entry_per_recipient() {
    // The sanity check for the measurement above: direct pushes to 50 devices do store
    // something per device, yet still share one body per message.
    let s = start_with(|c| c.storage.sweep_interval_ms = 50).await;
    let mut devices = Vec::new();
    for _ in 0..50 {
        devices.push(s.register(None).await.0);
    }
    let before = settled_size(s.data.path()).await;
    for i in 0..BROADCASTS {
        let r = s
            .push_body(json!({"to": {"devices": devices}, "data": payload(i)}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["recipients"], 50);
    }
    let after = settled_size(s.data.path()).await;
    let growth = after.saturating_sub(before);
    eprintln!("{BROADCASTS} direct pushes of ~2 KiB to 50 devices: +{growth} bytes");
    // Per device copies would be 40 × 50 × 2 KiB = 4 MB.
    assert!(
        growth < 1024 * KIB,
        "data dir grew by {growth} bytes for {BROADCASTS} pushes to 50 devices"
    );
    s.stop().await;
}
