//! Per-app connection limits across transports, changed live.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn an_app_at_its_connection_limit_refuses_new_devices_until_raised() {
    let s = start().await;
    let r = s
        .call(
            Method::PATCH,
            "/v1/apps/demo",
            Some(&s.creds.admin_token),
            Some(json!({"limits": {"max_connections": 2}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_d1, t1) = s.register(None).await;
    let (_d2, t2) = s.register(None).await;
    let (_d3, t3) = s.register(None).await;
    let _c1 = s.connect(&t1).await;
    let c2 = s.connect(&t2).await;
    // Header auth: refused before the upgrade.
    let err = s
        .client
        .open_ws(Some(&t3))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("429"), "expected 429, got {err:?}");
    // Hello auth: closed with 4029.
    assert!(s.client.connect(&t3, false).await.is_err());
    // SSE: 429.
    let sse = s
        .request(
            Method::GET,
            &format!("/v1/poll?token={t3}&wait=0"),
            &[],
            None,
        )
        .await;
    assert_eq!(sse.status, StatusCode::TOO_MANY_REQUESTS);
    // A device replacing its own session is always let in.
    let again = s.client.connect(&t2, true).await;
    assert!(
        again.is_ok(),
        "a reconnect of a device already counted is allowed"
    );
    drop(c2);
    // Raised live: the third device connects.
    s.call(
        Method::PATCH,
        "/v1/apps/demo",
        Some(&s.creds.admin_token),
        Some(json!({"limits": {"max_connections": null}})),
    )
    .await;
    assert!(s.client.connect(&t3, true).await.is_ok());
    s.stop().await;
}
