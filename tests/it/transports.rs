//! The three device transports — WebSocket, Server-Sent Events and long-poll — are adapters
//! over one session: one table-driven test asserts the same semantics through each.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use warbler::client::DeviceConnection;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Sse,
    LongPoll,
}

/// Where the device token goes: the `Authorization` header, or the other place the
/// transport accepts (`hello` frame for WebSocket, `?token=` for SSE and long-poll).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenIn {
    Header,
    Elsewhere,
}

enum Conn {
    Ws(DeviceConnection),
    Sse(SseStream),
    Poll {
        token: String,
        token_in: TokenIn,
        after: u64,
        buf: VecDeque<Value>,
    },
}

fn poll_path(token: &str, token_in: TokenIn, query: &str) -> (String, Option<String>) {
    match token_in {
        TokenIn::Header => (format!("/v1/poll?{query}"), Some(token.to_owned())),
        TokenIn::Elsewhere => (format!("/v1/poll?token={token}&{query}"), None),
    }
}

async fn poll_once(
    s: &TestServer,
    token: &str,
    token_in: TokenIn,
    query: &str,
) -> (StatusCode, Value) {
    let (path, bearer) = poll_path(token, token_in, query);
    let r = s.call(Method::GET, &path, bearer.as_deref(), None).await;
    (r.status, r.body)
}

/// Opens a connection; `Err` describes how it was refused.
async fn open(
    s: &TestServer,
    t: Transport,
    token: &str,
    token_in: TokenIn,
    last_event_id: Option<u64>,
) -> Result<Conn, String> {
    match t {
        Transport::WebSocket => s
            .client
            .connect(token, token_in == TokenIn::Header)
            .await
            .map(Conn::Ws)
            .map_err(|e| e.to_string()),
        Transport::Sse => {
            let last = last_event_id.map(|l| l.to_string());
            let mut headers = Vec::new();
            let auth = format!("Bearer {token}");
            let path = match token_in {
                TokenIn::Header => {
                    headers.push(("authorization", auth.as_str()));
                    "/v1/events".to_owned()
                }
                TokenIn::Elsewhere => format!("/v1/events?token={token}"),
            };
            if let Some(l) = &last {
                headers.push(("last-event-id", l.as_str()));
            }
            let mut stream = s
                .sse(&path, &headers)
                .await
                .map_err(|r| format!("{} {}", r.status, r.body))?;
            let welcome = stream.next_within(WAIT).await.expect("welcome event");
            assert_eq!(welcome.event, "welcome", "{welcome:?}");
            assert_eq!(welcome.json()["type"], "welcome");
            Ok(Conn::Sse(stream))
        }
        Transport::LongPoll => {
            let after = last_event_id.unwrap_or(0);
            let (status, body) =
                poll_once(s, token, token_in, &format!("wait=0&after={after}")).await;
            if status != StatusCode::OK {
                return Err(format!("{status} {body}"));
            }
            let buf: VecDeque<Value> = body.as_array().expect("array").iter().cloned().collect();
            Ok(Conn::Poll {
                token: token.to_owned(),
                token_in,
                after,
                buf,
            })
        }
    }
}

impl Conn {
    /// The next `n` message frames, in order.
    async fn recv(&mut self, s: &TestServer, n: usize) -> Vec<Value> {
        match self {
            Conn::Ws(c) => recv_messages(c, n, WAIT).await,
            Conn::Sse(stream) => stream
                .messages(n, WAIT)
                .await
                .into_iter()
                .map(|(id, frame)| {
                    assert_eq!(id, frame["seq"].to_string(), "SSE id is the seq");
                    frame
                })
                .collect(),
            Conn::Poll {
                token,
                token_in,
                after,
                buf,
            } => {
                let deadline = Instant::now() + WAIT;
                let mut out = Vec::new();
                while out.len() < n {
                    if let Some(frame) = buf.pop_front() {
                        if frame["type"] == "message" {
                            *after = frame["seq"].as_u64().expect("seq");
                            out.push(frame);
                        }
                        continue;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "only {} of {n} polled",
                        out.len()
                    );
                    // A long wait: it must return as soon as something arrives.
                    let (status, body) =
                        poll_once(s, token, *token_in, &format!("wait=10&after={after}")).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    buf.extend(body.as_array().expect("array").iter().cloned());
                }
                out
            }
        }
    }

    /// Acks through the transport's own path.
    async fn ack(&mut self, s: &TestServer, token: &str, ids: &[String]) {
        let r = match self {
            Conn::Ws(c) => {
                c.ack(ids).await.unwrap();
                for id in ids {
                    s.status_until(id, "acked", |v| v["counts"]["acked"] == 1)
                        .await;
                }
                return;
            }
            Conn::Sse(_) => s.http_ack(token, ids).await,
            // Token in the query this time: both places work for every device endpoint.
            Conn::Poll { .. } => {
                s.call(
                    Method::POST,
                    &format!("/v1/ack?token={token}"),
                    None,
                    Some(json!({"ids": ids})),
                )
                .await
            }
        };
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["acked"], ids.len(), "{}", r.body);
    }

    /// Reports messages opened through the transport's own path.
    async fn opened(&mut self, s: &TestServer, token: &str, ids: &[String]) {
        match self {
            Conn::Ws(c) => c.opened(ids).await.unwrap(),
            _ => {
                // Token in the query this time: both places work for every device endpoint.
                let r = s
                    .call(
                        Method::POST,
                        &format!("/v1/opened?token={token}"),
                        None,
                        Some(json!({"ids": ids})),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
            }
        }
    }

    /// Asserts that no message is pending or arriving.
    async fn assert_nothing(&mut self, s: &TestServer) {
        match self {
            Conn::Ws(c) => assert_silent(c, QUIET).await,
            Conn::Sse(stream) => stream.assert_no_message(QUIET).await,
            Conn::Poll {
                token, token_in, ..
            } => {
                // Nothing pending: `wait=0` answers `[]` at once.
                let started = Instant::now();
                let (status, body) = poll_once(s, token, *token_in, "wait=0").await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, json!([]));
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "{:?}",
                    started.elapsed()
                );
            }
        }
    }
}

/// Whether a bad token is refused: 401 before a stream starts, or WebSocket close 4001.
async fn assert_refused(s: &TestServer, t: Transport, bad: &str, token_in: TokenIn) {
    let err = open(s, t, bad, token_in, None)
        .await
        .err()
        .unwrap_or_else(|| panic!("{t:?} accepted a bad token ({token_in:?})"));
    match (t, token_in) {
        (Transport::WebSocket, TokenIn::Elsewhere) => {
            // The hello frame is checked after the upgrade: the server closes with 4001.
            let mut ws = s.client.open_ws(None).await.unwrap();
            use futures_util::{SinkExt, StreamExt};
            ws.send(tokio_tungstenite::tungstenite::Message::Text(
                json!({"type": "hello", "token": bad}).to_string().into(),
            ))
            .await
            .unwrap();
            let mut code = None;
            while let Some(Ok(msg)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = msg {
                    code = Some(u16::from(f.code));
                }
            }
            assert_eq!(code, Some(4001), "{err}");
        }
        _ => assert!(err.contains("401"), "{t:?} {token_in:?}: {err}"),
    }
}

#[tokio::test]
async fn every_transport_has_the_same_auth_replay_live_ack_and_resume_semantics() {
    let s = start().await;
    for t in [Transport::WebSocket, Transport::Sse, Transport::LongPoll] {
        eprintln!("--- {t:?}");
        let (device, token) = s.register(None).await;
        let push = |i: usize| {
            s.push_ok(json!({"to": {"device": device}, "data": {"i": i, "via": format!("{t:?}")}}))
        };

        // Auth: bad tokens refused, wherever they are; a good one accepted in both places.
        for how in [TokenIn::Header, TokenIn::Elsewhere] {
            assert_refused(&s, t, "wdt_dev_nope_nope", how).await;
            assert_refused(&s, t, "not-a-token", how).await;
        }
        if t != Transport::WebSocket {
            let path = if t == Transport::Sse {
                "/v1/events"
            } else {
                "/v1/poll?wait=0"
            };
            let r = s.request(Method::GET, path, &[], None).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{t:?} without a token");
            assert_eq!(r.body["error"]["code"], "unauthenticated");
        }
        for how in [TokenIn::Header, TokenIn::Elsewhere] {
            let mut conn = open(&s, t, &token, how, None)
                .await
                .unwrap_or_else(|e| panic!("{t:?} refused a good token ({how:?}): {e}"));
            conn.assert_nothing(&s).await;
        }

        // Replay: what was pushed while away comes first, in acceptance order.
        let mut sent = Vec::new();
        for i in 0..3 {
            sent.push(push(i).await);
        }
        let mut conn = open(&s, t, &token, TokenIn::Header, None).await.unwrap();
        let got = conn.recv(&s, 3).await;
        assert_eq!(ids(&got), sent, "{t:?} replay");
        assert!(got
            .iter()
            .all(|m| m["type"] == "message" && m["data"]["i"].is_u64()));
        let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{t:?} seqs {seqs:?}");

        // Live: pushes made while connected (or while a poll waits) arrive promptly.
        let started = Instant::now();
        let late = tokio::spawn({
            let client = s.client.clone();
            let key = s.creds.api_key.clone();
            let device = device.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut ids = Vec::new();
                for i in 3..5 {
                    let r = client
                        .call(
                            Method::POST,
                            "/v1/messages",
                            Some(&key),
                            Some(&json!({"to": {"device": device}, "data": {"i": i}})),
                        )
                        .await
                        .unwrap();
                    ids.push(r.body["id"].as_str().unwrap().to_owned());
                }
                ids
            }
        });
        let got = conn.recv(&s, 2).await;
        let live_ids = late.await.unwrap();
        assert_eq!(ids(&got), live_ids, "{t:?} live");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{t:?}: live delivery took {:?}",
            started.elapsed()
        );
        sent.extend(live_ids);

        // Acks through the transport's path: nothing is replayed after reconnecting.
        conn.ack(&s, &token, &sent).await;
        conn.opened(&s, &token, &sent[..1]).await;
        s.status_until(&sent[0], "opened", |v| v["counts"]["opened"] == 1)
            .await;
        drop(conn);
        let mut conn = open(&s, t, &token, TokenIn::Elsewhere, None).await.unwrap();
        conn.assert_nothing(&s).await;
        drop(conn);

        // Resume: SSE `Last-Event-ID` and long-poll `after` skip what the client has.
        // (WebSocket clients resume by acking; they get all three.)
        let mut more = Vec::new();
        for i in 5..8 {
            more.push(push(i).await);
        }
        let first_seq = s.status(&more[0]).await;
        assert_eq!(first_seq["state"], "pending");
        let mut conn = open(&s, t, &token, TokenIn::Header, None).await.unwrap();
        let all3 = conn.recv(&s, 3).await;
        assert_eq!(ids(&all3), more, "{t:?} unacked ones replayed");
        drop(conn);
        let seq0 = all3[0]["seq"].as_u64().unwrap();
        let mut conn = open(&s, t, &token, TokenIn::Header, Some(seq0))
            .await
            .unwrap();
        let expect = if t == Transport::WebSocket {
            more.clone()
        } else {
            more[1..].to_vec()
        };
        let got = conn.recv(&s, expect.len()).await;
        assert_eq!(ids(&got), expect, "{t:?} resume after seq {seq0}");
        if let Conn::Sse(stream) = &mut conn {
            stream.assert_no_message(QUIET).await;
        }
        if let Conn::Ws(c) = &mut conn {
            assert_silent(c, QUIET).await;
        }
        drop(conn);
    }
    // A `Last-Event-ID` that is not a seq is refused.
    let (_d, token) = s.register(None).await;
    let auth = format!("Bearer {token}");
    let r = s
        .sse(
            "/v1/events",
            &[("authorization", &auth), ("last-event-id", "abc")],
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn long_poll_answers_at_once_when_idle_with_wait_zero_and_early_when_a_push_arrives() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let started = Instant::now();
    let r = s.poll(&token, "wait=0").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!([]));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // Nothing arrives: the poll ends at its wait.
    let started = Instant::now();
    let r = s.poll(&token, "wait=1").await;
    assert_eq!(r.body, json!([]));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A push during a wait=2 poll ends it early, with the message.
    let started = Instant::now();
    let waiting = tokio::spawn({
        let client = s.client.clone();
        let token = token.clone();
        async move {
            client
                .call(Method::GET, "/v1/poll?wait=2", Some(&token), None)
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = s
        .push_ok(json!({"to": {"device": device}, "data": {"k": "now"}}))
        .await;
    let r = waiting.await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(ids(r.body.as_array().unwrap()), vec![id]);
    assert!(
        took < Duration::from_millis(1500),
        "returned after {took:?}"
    );

    // An unbounded wait is refused.
    let r = s.poll(&token, "wait=3600").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn sse_streams_send_comment_heartbeats() {
    let s = start_with(|c| c.gateway.heartbeat_secs = 1).await;
    let (_device, token) = s.register(None).await;
    let mut stream = s
        .sse(&format!("/v1/events?token={token}"), &[])
        .await
        .expect("stream");
    assert_eq!(stream.next_within(WAIT).await.unwrap().event, "welcome");
    stream.assert_no_message(Duration::from_millis(2_500)).await;
    assert!(stream.comments >= 1, "no heartbeat comment in 2.5 s");
    s.stop().await;
}
