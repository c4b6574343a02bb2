//! The Pusher protocol as soketi speaks it: a WebSocket subscriber
//! (`/app/KEY?protocol=7`, `pusher:subscribe` to a public channel, `pusher:ping` answered)
//! and a publisher on the HTTP API (`POST /apps/ID/events`, signed with HMAC-SHA256 as
//! Pusher's server libraries sign), one request at a time per connection, hand-written
//! HTTP/1.1 so no client pool sits between the socket and the measure.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::net::{connect, STEP_TIMEOUT};

/// An app as soketi's default app manager holds it.
#[derive(Debug, Clone)]
pub struct App {
    pub id: String,
    pub key: String,
    pub secret: String,
}

/// One frame from the server; `data` is a JSON string for every event this client uses.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<Cow<'a, str>>,
}

/// Just the event name (for frames whose `data` is an object, e.g. `pusher:error`).
#[derive(Deserialize)]
struct EventOnly {
    event: String,
}

fn event_name(text: &str) -> String {
    serde_json::from_str::<EventOnly>(text).map_or_else(|_| "?".to_owned(), |e| e.event)
}

/// A subscriber's WebSocket (4 KiB read buffer, as `warbler bench connections` uses).
pub struct Subscriber {
    ws: WebSocketStream<TcpStream>,
}

impl Subscriber {
    /// Connects, waits for `pusher:connection_established`, and with `channel` subscribes
    /// and waits for `pusher_internal:subscription_succeeded`.
    ///
    /// # Errors
    /// Connect or handshake failure, `pusher:error`, or the step timeout.
    pub async fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        app: &App,
        channel: Option<&str>,
    ) -> anyhow::Result<Self> {
        let stream = connect(addr, source).await?;
        let url = format!(
            "ws://{addr}/app/{}?protocol=7&client=warbler-bench&version=0.1",
            app.key
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let steps = async {
            let (mut ws, _) =
                tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
            wait_event(&mut ws, "pusher:connection_established").await?;
            if let Some(ch) = channel {
                let sub = format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{ch}"}}}}"#);
                ws.send(Message::text(sub)).await?;
                wait_event(&mut ws, "pusher_internal:subscription_succeeded").await?;
            }
            anyhow::Ok(ws)
        };
        let ws = tokio::time::timeout(STEP_TIMEOUT, steps)
            .await
            .map_err(|_| anyhow!("Pusher handshake timed out"))??;
        Ok(Self { ws })
    }

    /// Waits for the next frame, takes every frame already readable, and hands the `data`
    /// of each channel event to `f`; answers `pusher:ping`. Returns the number of events.
    ///
    /// # Errors
    /// The connection closed or broke.
    pub async fn recv_batch(&mut self, f: &mut (dyn FnMut(&[u8]) + Send)) -> anyhow::Result<usize> {
        let first = self
            .ws
            .next()
            .await
            .ok_or_else(|| anyhow!("server closed the connection"))??;
        let mut n = 0;
        let mut pings = 0;
        let mut msg = Some(first);
        while let Some(m) = msg.take() {
            match m {
                Message::Text(t) => match serde_json::from_str::<Frame>(t.as_str()) {
                    Ok(fr) if fr.event == "pusher:ping" => pings += 1,
                    Ok(fr) if !fr.event.starts_with("pusher") => {
                        if let Some(d) = fr.data {
                            f(d.as_bytes());
                            n += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if event_name(t.as_str()) == "pusher:ping" {
                            pings += 1;
                        }
                    }
                },
                Message::Close(_) => bail!("server closed the connection"),
                _ => {}
            }
            if let Some(next) = self.ws.next().now_or_never() {
                msg = Some(next.ok_or_else(|| anyhow!("server closed the connection"))??);
            }
        }
        for _ in 0..pings {
            self.ws
                .send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                .await?;
        }
        Ok(n)
    }
}

async fn wait_event(ws: &mut WebSocketStream<TcpStream>, want: &str) -> anyhow::Result<()> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            let event = serde_json::from_str::<Frame>(t.as_str())
                .map_or_else(|_| event_name(t.as_str()), |f| f.event.into_owned());
            if event == want {
                return Ok(());
            }
            if event == "pusher:error" {
                bail!("pusher:error: {}", t.as_str());
            }
        }
    }
    bail!("closed before {want}")
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The signed query string of `POST path` with `body` (Pusher's HTTP API auth, version 1.0).
#[must_use]
pub fn signed_query(app: &App, path: &str, body: &[u8], timestamp: u64) -> String {
    let md5 = hex(&Md5::digest(body));
    // Parameters in lexical order, as the signature requires.
    let params = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}",
        app.key
    );
    let to_sign = format!("POST\n{path}\n{params}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app.secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(to_sign.as_bytes());
    format!(
        "{params}&auth_signature={}",
        hex(&mac.finalize().into_bytes())
    )
}

/// One HTTP/1.1 client of the HTTP API, one request at a time. soketi answers with
/// `Connection: close` (uWebSockets `end(body, true)`), so each request after a closing
/// answer opens a new connection, as a Pusher server library would.
pub struct Publisher {
    stream: Option<TcpStream>,
    buf: BytesMut,
    app: App,
    addr: SocketAddr,
    /// TCP connections opened so far.
    pub connects: usize,
}

/// Largest response head or body accepted.
const MAX_RESPONSE: usize = 64 * 1024;

impl Publisher {
    /// # Errors
    /// Connect failure.
    pub async fn open(addr: SocketAddr, app: &App) -> anyhow::Result<Self> {
        Ok(Self {
            stream: Some(connect(addr, None).await?),
            buf: BytesMut::with_capacity(4096),
            app: app.clone(),
            addr,
            connects: 1,
        })
    }

    /// Triggers event `event` on `channel` with string `data`; waits for the answer.
    ///
    /// # Errors
    /// A non-200 answer, a broken connection, or no answer within the step timeout.
    pub async fn trigger(&mut self, channel: &str, event: &str, data: &str) -> anyhow::Result<()> {
        let body =
            serde_json::json!({ "name": event, "channel": channel, "data": data }).to_string();
        let path = format!("/apps/{}/events", self.app.id);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let query = signed_query(&self.app, &path, body.as_bytes(), ts);
        let req = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        tokio::time::timeout(STEP_TIMEOUT, async {
            let mut stream = if let Some(s) = self.stream.take() {
                s
            } else {
                self.connects += 1;
                connect(self.addr, None).await?
            };
            self.buf.clear();
            stream.write_all(req.as_bytes()).await?;
            let keep = Self::read_response(&mut stream, &mut self.buf).await?;
            if keep {
                self.stream = Some(stream);
            }
            anyhow::Ok(())
        })
        .await
        .map_err(|_| anyhow!("HTTP API answer timed out"))?
    }

    /// Reads one answer; `Ok(true)` when the connection stays open.
    async fn read_response(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<bool> {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if buf.len() > MAX_RESPONSE {
                bail!("HTTP response head too long");
            }
            if stream.read_buf(buf).await.context("read")? == 0 {
                bail!("HTTP API closed the connection");
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head.split(' ').nth(1).unwrap_or("");
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow!("HTTP response without Content-Length: {head}"))?;
        if len > MAX_RESPONSE {
            bail!("HTTP response body of {len} bytes");
        }
        let total = head_end + 4 + len;
        while buf.len() < total {
            if stream.read_buf(buf).await.context("read")? == 0 {
                bail!("HTTP API closed the connection");
            }
        }
        let resp = buf.split_to(total);
        // soketi has been seen answering an auth failure with status 200 and an error body:
        // only `{"ok":true}` counts as accepted.
        let body = &resp[head_end + 4..];
        if status != "200" || !body.windows(9).any(|w| w == br#""ok":true"#) {
            bail!(
                "HTTP API answered {status}: {}",
                String::from_utf8_lossy(body)
            );
        }
        let closes = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
            })
        });
        Ok(!closes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_pusher_documents() {
        // The worked example of Pusher's HTTP API authentication documentation.
        let app = App {
            id: "3".to_owned(),
            key: "278d425bdf160c739803".to_owned(),
            secret: "7ad3773142a6692b25b8".to_owned(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let q = signed_query(&app, "/apps/3/events", body, 1_353_088_179);
        assert!(
            q.contains("body_md5=ec365a775a4cd0599faeb73354201b6f"),
            "{q}"
        );
        assert!(
            q.ends_with(
                "auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
            ),
            "{q}"
        );
    }
}
