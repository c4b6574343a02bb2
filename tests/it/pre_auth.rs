//! Protections before authentication: failed credentials are throttled per address, and one
//! address cannot hold more than its share of connections.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};

use crate::harness::*;

#[tokio::test]
async fn guessing_keys_gets_an_address_429_with_retry_after() {
    let s = start_with(|c| c.server.auth_failures_per_minute = 5).await;
    for i in 0..5 {
        let r = s
            .call(
                Method::GET,
                "/v1/messages/msg_x",
                Some(&format!("wak_key_guess{i}_nope")),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let auth = format!("Bearer {}", s.creds.api_key);
    let locked = s
        .request(
            Method::GET,
            "/v1/messages/msg_x",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even a good key waits out the lockout"
    );
    assert_eq!(locked.body["error"]["code"], "rate_limited");
    let wait: u64 = locked.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&wait));
    // Missing credentials are not guesses and do not count.
    let s2 = start_with(|c| c.server.auth_failures_per_minute = 2).await;
    for _ in 0..5 {
        let r = s2.call(Method::GET, "/v1/apps", None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let ok = s2
        .call(Method::GET, "/v1/apps", Some(&s2.creds.admin_token), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    s.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connections() {
    let s = start_with(|c| c.server.max_connections_per_ip = 3).await;
    let tls =
        warbler::tls::client_config_trusting(&s.data.path().join("tls/ca.crt"), &[]).expect("tls");
    let connect = || {
        let tls = Arc::clone(&tls);
        let addr = s.addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            tokio::time::timeout(
                Duration::from_secs(3),
                tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
            )
            .await
        }
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect().await.expect("in time").expect("handshake"));
    }
    let fourth = connect().await;
    assert!(
        matches!(fourth, Ok(Err(_))),
        "the fourth connection from one address is refused"
    );
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        matches!(connect().await, Ok(Ok(_))),
        "a freed slot can be used again"
    );
    s.stop().await;
}
