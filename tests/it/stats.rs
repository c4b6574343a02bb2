//! Per-app, per-minute statistics: `GET /v1/stats?from=&to=&step=`.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);

const FIELDS: [&str; 5] = ["accepted", "delivered", "acked", "opened", "expired"];

/// Each counter summed over the series.
fn totals(stats: &Value) -> Value {
    let series = stats["series"].as_array().expect("series");
    let mut out = serde_json::Map::new();
    for f in FIELDS {
        let sum: u64 = series.iter().map(|p| p[f].as_u64().expect("count")).sum();
        out.insert(f.to_owned(), json!(sum));
    }
    Value::Object(out)
}

#[tokio::test]
async fn stats_count_this_minutes_pushes_deliveries_acks_opens_and_expiries() {
    let s = start_with(|c| c.storage.sweep_interval_ms = 50).await;
    let (other_client_key, other_key, _) = s.create_app("other").await;
    let (online, token) = s.register(None).await;
    let (offline, _) = s.register(None).await;
    let (_o, other_token) = register_with(&s.client, &other_client_key, None).await;
    let mut conn = s.connect(&token).await;

    let mut direct = Vec::new();
    for i in 0..3 {
        direct.push(
            s.push_ok(json!({"to": {"device": online}, "data": {"i": i}}))
                .await,
        );
    }
    let all = s
        .push_ok(json!({"to": {"all": true}, "data": {"all": 1}}))
        .await;
    let short = s
        .push_ok(json!({"to": {"device": offline}, "data": {"short": 1}, "ttl": 1}))
        .await;
    let got = recv_messages(&mut conn, 4, WAIT).await;
    assert_eq!(ids(&got)[..3], direct[..]);
    assert_eq!(got[3]["id"], all.as_str());
    conn.ack(&direct[..2]).await.unwrap();
    conn.opened(&direct[..1]).await.unwrap();
    s.status_until(&short, "expired", |v| v["counts"]["expired"] == 1)
        .await;
    // The other app's activity is counted for the other app only.
    let mut other_conn = s.connect(&other_token).await;
    let r = s
        .client
        .call(
            Method::POST,
            "/v1/messages",
            Some(&other_key),
            Some(&json!({"to": {"all": true}, "data": {}})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::ACCEPTED);
    recv_messages(&mut other_conn, 1, WAIT).await;

    let expected = json!({"accepted": 5, "delivered": 4, "acked": 2, "opened": 1, "expired": 1});
    let stats = eventually(WAIT, "the counts add up", || async {
        let r = s
            .call(
                Method::GET,
                "/v1/stats?step=60",
                Some(&s.creds.api_key),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (totals(&r.body) == expected).then_some(r.body)
    })
    .await;
    assert_eq!(stats["step"], 60);
    let series = stats["series"].as_array().unwrap();
    assert!(
        series.len() >= 60,
        "an hour of minutes by default: {}",
        series.len()
    );
    // Everything happened in the last minute or two: the last buckets hold it all.
    let busy: Vec<usize> = series
        .iter()
        .enumerate()
        .filter(|(_, p)| p["accepted"].as_u64().unwrap() > 0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        busy.iter().all(|&i| i + 2 >= series.len()),
        "only the current minute (or the one before) is busy: {busy:?} of {}",
        series.len()
    );

    let want = json!({"accepted": 1, "delivered": 1, "acked": 0, "opened": 0, "expired": 0});
    eventually(WAIT, "the other app's own counts", || async {
        let other = s
            .client
            .call(Method::GET, "/v1/stats?step=3600", Some(&other_key), None)
            .await
            .unwrap();
        assert_eq!(other.status, StatusCode::OK, "{}", other.body);
        (totals(&other.body) == want).then_some(())
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn stats_refuse_a_bad_step_or_range() {
    let s = start().await;
    for query in [
        "step=0",
        "step=30",
        "step=90",
        "step=abc",
        "step=-60",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=yesterday",
        "from=2000-01-01T00:00:00Z&step=60",
        "bogus=1",
    ] {
        let r = s
            .call(
                Method::GET,
                &format!("/v1/stats?{query}"),
                Some(&s.creds.api_key),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request", "{query}");
    }
    let ok = s
        .call(
            Method::GET,
            "/v1/stats?from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z&step=600",
            Some(&s.creds.api_key),
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["series"].as_array().unwrap().len(), 12);
    assert_eq!(ok.body["series"][0]["t"], "2026-01-01T00:00:00.000Z");
    // Without an API key, or with a device token, no statistics.
    let r = s.call(Method::GET, "/v1/stats", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}
