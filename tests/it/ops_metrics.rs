//! Operations: Prometheus metrics present and moving, per-app rate limits with Retry-After,
//! limit changes taking effect live.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metrics(s: &TestServer) -> String {
    let (status, text) = s.request_text(Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    text
}

#[tokio::test]
async fn metrics_families_are_present_and_move_with_traffic() {
    let s = start().await;
    let before = metrics(&s).await;
    for family in [
        "warbler_session_outbox_overflows_total",
        "warbler_store_commit_seconds",
        "warbler_store_commit_batch_size",
        "warbler_store_queue_depth",
        "warbler_tls_handshake_failures_total",
    ] {
        assert!(before.contains(family), "{family} missing:\n{before}");
    }
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    let mid = metrics(&s).await;
    assert_eq!(
        value(&mid, "warbler_connections{transport=\"websocket\"}"),
        1,
        "{mid}"
    );
    for i in 0..3 {
        s.push(json!({"device": device}), &format!("m{i}")).await;
    }
    let got = recv_messages(&mut conn, 3, Duration::from_secs(5)).await;
    conn.ack(&ids(&got)).await.expect("ack");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(&s).await;
        let accepted = value(&text, "warbler_pushes_accepted_total{app=\"demo\"}");
        let acked = value(&text, "warbler_acked_total{app=\"demo\"}");
        if accepted == 3 && acked == 3 {
            assert!(value(&text, "warbler_store_commit_seconds_count") > 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters never moved:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A failed TLS handshake is counted.
    let mut raw = tokio::net::TcpStream::connect(s.addr).await.expect("tcp");
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    drop(raw);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(&s).await;
        if value(&text, "warbler_tls_handshake_failures_total") >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "handshake failure not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(conn);
    s.stop().await;
}

#[tokio::test]
async fn pushes_past_the_apps_rate_get_429_with_retry_after_and_limit_changes_apply_live() {
    let s = start_with(|c| c.limits.pushes_per_second = 5).await;
    let (device, _token) = s.register(None).await;
    // All at once: sent one after another, a slow disk (each push waits for its fsync)
    // would let the bucket refill during the burst.
    let keys: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let statuses =
        futures_util::future::join_all(keys.iter().map(|k| s.push(json!({"device": device}), k)))
            .await;
    let accepted = statuses
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .count();
    let limited: Vec<_> = statuses
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        (5..=6).contains(&accepted),
        "a burst of one second (5) passes, got {accepted}"
    );
    assert!(!limited.is_empty());
    assert_eq!(limited[0].body["error"]["code"], "rate_limited");
    let auth = format!("Bearer {}", s.creds.api_key);
    let raw = s
        .request(
            Method::POST,
            "/v1/messages",
            &[("authorization", &auth)],
            Some(json!({"to": {"device": device}, "data": {}})),
        )
        .await;
    assert_eq!(raw.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = raw.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let text = metrics(&s).await;
    assert!(
        value(&text, "warbler_rate_limited_total{app=\"demo\"}") >= 2,
        "{text}"
    );
    // Raise the app's limit: it applies to the next request.
    let r = s
        .call(
            Method::PATCH,
            "/v1/apps/demo",
            Some(&s.creds.admin_token),
            Some(json!({"limits": {"pushes_per_second": 1000}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["limits"]["pushes_per_second"], 1000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ok = s.push(json!({"device": device}), "after").await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
    s.stop().await;
}
