//! WebSocket over HTTP/2 (RFC 8441, extended CONNECT), as browsers do when they already hold
//! an HTTP/2 connection to the server.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::Empty;
use hyper::ext::Protocol;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::harness::*;

#[tokio::test]
async fn a_websocket_over_http2_gets_welcome_and_messages() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let tls = warbler::tls::client_config_trusting(
        &s.data.path().join("tls/ca.crt"),
        &[warbler::tls::ALPN_H2],
    )
    .expect("tls config");
    let tcp = tokio::net::TcpStream::connect(s.addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
        .connect(name, tcp)
        .await
        .expect("tls");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost:{}/v1/connect", s.addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .expect("request");
    req.extensions_mut()
        .insert(Protocol::from_static("websocket"));
    let resp = sender.send_request(req).await.expect("extended CONNECT");
    assert_eq!(resp.status(), StatusCode::OK);
    let upgraded = hyper::upgrade::on(resp).await.expect("upgrade");
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let welcome = next_text(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["device_id"], device.as_str());
    let id = s
        .push(serde_json::json!({"device": device}), "over h2")
        .await
        .body["id"]
        .clone();
    let msg = next_text(&mut ws).await;
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["id"], id);
    s.stop().await;
}

async fn next_text<S>(ws: &mut WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(&t).expect("json"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}
