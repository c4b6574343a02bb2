//! Connection lanes (`src/lanes.rs`): the server reads the first bytes of a connection's
//! first request to decide which runtime serves it, and moves API connections, TLS state
//! and all, to the API runtime. Whatever the lane, every request must be served the same:
//! a request line that arrives in pieces, a keep-alive connection that mixes API and device
//! calls in either order, and a client that never sends a byte.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{json_request, start, TestServer};

/// A TLS connection to the server, trusting its CA, with nothing sent yet.
async fn tls_connect(s: &TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = s.data.path().join("tls/ca.crt");
    let tls = warbler::tls::client_config_trusting(&ca, &[warbler::tls::ALPN_HTTP11])
        .expect("tls config");
    let tcp = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("tcp connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::clone(&tls))
        .connect(name, tcp)
        .await
        .expect("tls handshake")
}

/// One HTTP/1.1 request, `Connection: close`, written in the given pieces with a pause
/// between them; the whole answer.
async fn request_in_pieces(s: &TestServer, pieces: &[&[u8]]) -> String {
    let mut stream = tls_connect(s).await;
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        stream.write_all(piece).await.expect("write");
        stream.flush().await.expect("flush");
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

fn push_request(api_key: &str, device: &str, title: &str) -> Vec<u8> {
    let body = json!({"to": {"device": device}, "notification": {"title": title}}).to_string();
    format!(
        "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {api_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn a_request_line_that_arrives_in_pieces_is_served() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let whole = push_request(&s.creds.api_key, &device, "in pieces");
    // Cut before the method ends, inside the path, and after the request line.
    for cuts in [&[2usize][..], &[9], &[4, 12, 30]] {
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut from = 0;
        for &cut in cuts {
            pieces.push(&whole[from..cut]);
            from = cut;
        }
        pieces.push(&whole[from..]);
        let answer = request_in_pieces(&s, &pieces).await;
        assert!(
            answer.starts_with("HTTP/1.1 202"),
            "cuts {cuts:?}: {answer}"
        );
    }
    // A device request cut inside its path (it could still be any device path).
    let poll = format!(
        "GET /v1/poll?wait=0 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    let answer = request_in_pieces(&s, &[&poll.as_bytes()[..10], &poll.as_bytes()[10..]]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        answer.matches("\"in pieces\"").count(),
        3,
        "the three pushes wait in the mailbox: {answer}"
    );
    s.stop().await;
}

/// Sends `method path` on `sender` with an optional bearer and JSON body; (status, body).
async fn send(
    sender: &mut Sender,
    method: hyper::Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (hyper::StatusCode, Value) {
    use http_body_util::BodyExt;
    let auth = format!("Bearer {bearer}");
    let req = json_request(method, path, "localhost", &[("authorization", &auth)], body);
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("json body")
    };
    (status, value)
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// Pushes to `device` on `sender`; the message id.
async fn push_on(sender: &mut Sender, api_key: &str, device: &str, title: &str) -> String {
    let body = json!({"to": {"device": device}, "notification": {"title": title}});
    let (status, reply) = send(
        sender,
        hyper::Method::POST,
        "/v1/messages",
        api_key,
        Some(body),
    )
    .await;
    assert_eq!(status, hyper::StatusCode::ACCEPTED, "{reply}");
    reply["id"].as_str().expect("id").to_owned()
}

/// Long-polls on `sender` for up to `wait` seconds; the answer as text.
async fn poll_on(sender: &mut Sender, token: &str, wait: u64) -> String {
    let path = format!("/v1/poll?wait={wait}");
    let (status, polled) = send(sender, hyper::Method::GET, &path, token, None).await;
    assert_eq!(status, hyper::StatusCode::OK, "{polled}");
    polled.to_string()
}

#[tokio::test]
async fn one_connection_mixes_api_and_device_calls_in_either_order() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let key = &s.creds.api_key;

    // API first (the connection moves to the API runtime), then device calls.
    let mut sender = s.http1().await.0;
    let first = push_on(&mut sender, key, &device, "api first").await;
    let polled = poll_on(&mut sender, &token, 5).await;
    assert!(polled.contains(&first), "the push is polled: {polled}");
    let ids = json!({"ids": [&first]});
    let (status, acked) = send(
        &mut sender,
        hyper::Method::POST,
        "/v1/ack",
        &token,
        Some(ids),
    )
    .await;
    assert_eq!(status, hyper::StatusCode::OK, "{acked}");
    assert_eq!(acked["acked"], 1, "{acked}");

    // Device first (the connection stays with the sessions), then the API.
    let mut sender = s.http1().await.0;
    let polled = poll_on(&mut sender, &token, 0).await;
    assert!(
        !polled.contains(&first),
        "acked, so not polled again: {polled}"
    );
    let second = push_on(&mut sender, key, &device, "device first").await;
    let polled = poll_on(&mut sender, &token, 5).await;
    assert!(polled.contains(&second), "{polled}");
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_sends_nothing_holds_up_no_one() {
    let s = start().await;
    // Handshaken and silent, and one that closes right after the handshake.
    let silent = tls_connect(&s).await;
    let mut closing = tls_connect(&s).await;
    closing.shutdown().await.expect("close");
    drop(closing);
    let (device, _) = s.register(None).await;
    let reply = s.push(json!({"device": device}), "still served").await;
    assert_eq!(reply.status, hyper::StatusCode::ACCEPTED, "{}", reply.body);
    drop(silent);
    s.stop().await;
}
