//! A consumer that stops reading is cut off after the write timeout without the server
//! buffering its backlog in memory, and loses nothing: it all stays pending in the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// Resident set size of this process (the server runs in it), in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

async fn wait_online(s: &TestServer, device: &str, online: bool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = s
            .call(
                Method::GET,
                &format!("/v1/devices/{device}"),
                Some(&s.creds.api_key),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if r.body["online"] == online {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "device still online={} after {within:?}",
            r.body["online"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const MESSAGES: usize = 3000;
const SENDERS: usize = 30;

/// 3000 messages of ~3 KB (~9 MB, more than loopback socket buffers hold) from 30
/// concurrent senders; returns each sender's accepted ids in order.
async fn push_blobs(s: &TestServer, device: &str) -> Vec<Vec<String>> {
    let blob = "x".repeat(3000);
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let (client, key, device, blob) = (
                s.client.clone(),
                s.creds.api_key.clone(),
                device.to_owned(),
                blob.clone(),
            );
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..MESSAGES / SENDERS {
                    let body =
                        json!({"to": {"device": device}, "data": {"t": t, "i": i, "blob": blob}});
                    let r = client
                        .call(Method::POST, "/v1/messages", Some(&key), Some(&body))
                        .await
                        .expect("push");
                    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
                    ids.push(r.body["id"].as_str().expect("id").to_owned());
                }
                ids
            })
        })
        .collect();
    let mut per_sender = Vec::new();
    for t in senders {
        per_sender.push(t.await.expect("sender"));
    }
    per_sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_is_cut_off_and_its_messages_stay_pending() {
    let s = start_with(|c| {
        c.gateway.write_timeout_secs = 1;
        c.gateway.outbox_capacity = 16;
        // Keep every one of the 3,000 pending: this test is about the cut-off, not the cap.
        c.limits.mailbox_cap = 10_000;
    })
    .await;
    let (device, token) = s.register(None).await;
    // A raw WebSocket that is never polled: nothing reads its socket, so once the kernel
    // buffers on both ends fill, the server's writes stall.
    let mut stalled = s.client.open_ws(Some(&token)).await.expect("open ws");
    wait_online(&s, &device, true, Duration::from_secs(5)).await;
    let rss_before = vm_rss_kib();

    let per_sender = push_blobs(&s, &device).await;
    let accepted: HashSet<String> = per_sender.iter().flatten().cloned().collect();
    assert_eq!(accepted.len(), MESSAGES);

    // The server gives up on the stalled connection: the session leaves the registry.
    wait_online(&s, &device, false, Duration::from_secs(15)).await;
    // Its outbox (16) filled long before: the metric says a session fell behind.
    let (_, text) = s.request_text(Method::GET, "/metrics").await;
    let overflows: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("warbler_session_outbox_overflows_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the overflow counter is exported");
    assert!(overflows >= 1, "overflows counted: {overflows}");
    let rss_after = vm_rss_kib();
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!("slow consumer: VmRSS {rss_before} KiB -> {rss_after} KiB (+{growth_mib} MiB)");
    assert!(
        growth_mib < 64,
        "memory grew by {growth_mib} MiB while a consumer stalled"
    );

    // Reading the stalled socket now yields what the kernel buffered, then the end.
    let mut buffered = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).expect("json frame");
                    if v["type"] == "message" {
                        buffered.push(v["seq"].as_u64().expect("seq"));
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled connection was closed by the server"
    );
    assert!(
        buffered.len() < MESSAGES,
        "the stalled client could not have received everything ({})",
        buffered.len()
    );
    assert!(buffered.windows(2).all(|w| w[0] < w[1]), "in seq order");
    eprintln!(
        "slow consumer: {} messages were in flight when it was cut off",
        buffered.len()
    );

    // Nothing was lost: a fresh connection gets all 3000, in seq order, once each.
    let mut conn = s.connect(&token).await;
    let got = recv_messages(&mut conn, MESSAGES, Duration::from_secs(60)).await;
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq increases");
    let got_ids = ids(&got);
    let distinct: HashSet<String> = got_ids.iter().cloned().collect();
    assert_eq!(distinct.len(), MESSAGES, "no duplicates");
    assert_eq!(distinct, accepted, "every accepted message, and only those");
    let position: HashMap<&str, usize> = got_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for ids in &per_sender {
        assert!(
            ids.windows(2)
                .all(|w| position[w[0].as_str()] < position[w[1].as_str()]),
            "each sender's pushes arrive in the order they were accepted"
        );
    }
    assert_eq!(got[0]["data"]["blob"].as_str().map(str::len), Some(3000));
    assert_silent(&mut conn, Duration::from_millis(300)).await;
    s.stop().await;
}
