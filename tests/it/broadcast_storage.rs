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

    // Sanity check of the measurement: 10 of the same payloads sent directly to 1,000 of
    // these devices store a (small) entry per device, and the data dir shows it in
    // megabytes, although the bodies are still stored once per message.
    let half: Vec<&str> = tokens[..1000].iter().map(|(d, _)| d.as_str()).collect();
    let before_direct = settled_size(s.data.path()).await;
    for i in 0..10 {
        let r = s
            .push_body(json!({"to": {"devices": half}, "data": payload(i)}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["recipients"], 1000);
    }
    let direct_growth = settled_size(s.data.path())
        .await
        .saturating_sub(before_direct);
    eprintln!("10 direct pushes of ~2 KiB to 1000 devices: +{direct_growth} bytes");
    assert!(
        direct_growth > 2 * 1024 * KIB,
        "10,000 mailbox entries should show in the measurement; grew {direct_growth} bytes"
    );
    s.stop().await;
}
