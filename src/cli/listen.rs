//! `warbler listen`: be a device. Registers one (or reuses a token), keeps a WebSocket open,
//! prints each message as it arrives and acks it; reconnects with backoff and jitter.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use clap::Args;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::remote::{field, print, CliError, ServerArgs};
use crate::client::{ClientError, DeviceConnection, Incoming};

#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Reuse this device token instead of registering a new device.
    #[arg(
        long,
        alias = "device-token",
        env = "WARBLER_DEVICE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Client key to register a device with. Default: the data dir's `demo` client key.
    #[arg(long, env = "WARBLER_CLIENT_KEY", hide_env_values = true)]
    client_key: Option<String>,
    /// Platform of a newly registered device.
    #[arg(long, default_value = "desktop")]
    platform: String,
    /// A user token (HS256 JWT) binding a newly registered device to a user and topics.
    #[arg(long)]
    user_token: Option<String>,
    /// Exit after this many messages (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
}

/// Ids printed lately, so a message re-sent after a reconnect (its ack was lost) is acked
/// again but not printed twice.
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    const CAPACITY: usize = 4096;

    fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

pub async fn run(args: ListenArgs) -> Result<(), CliError> {
    let json = args.server.json;
    let client = args.server.client()?;
    let token = if let Some(t) = args.token.clone() {
        t
    } else {
        let key = args
            .server
            .credential(args.client_key.as_deref(), "client key", |c| c.client_key)?;
        let (device_id, token) = client
            .register_device(&key, &args.platform, args.user_token.as_deref())
            .await?;
        let registered = json!({"type": "registered", "device_id": device_id, "token": token});
        print(json, &registered, || {
            format!("registered {device_id} (reuse it with --token {token})")
        });
        token
    };
    let mut seen = Seen {
        order: VecDeque::new(),
        set: HashSet::new(),
    };
    let mut received = 0u64;
    let mut attempt = 0u32;
    loop {
        match client.connect(&token, true).await {
            Ok(mut conn) => {
                attempt = 0;
                eprintln!("connected as {}", conn.device_id);
                let done = session(&mut conn, json, &mut seen, &mut received, args.count).await?;
                if done {
                    let _ = conn.close().await;
                    return Ok(());
                }
            }
            Err(e) => refused_upgrade(e)?,
        }
        let delay = backoff(attempt);
        attempt = attempt.saturating_add(1);
        eprintln!("reconnecting in {} ms", delay.as_millis());
        tokio::time::sleep(delay).await;
    }
}

/// Reads one connection until it ends. `Ok(true)`: `--count` reached; `Ok(false)`:
/// reconnect; `Err`: stop (the device is gone, replaced, or the app suspended).
async fn session(
    conn: &mut DeviceConnection,
    json: bool,
    seen: &mut Seen,
    received: &mut u64,
    count: Option<u64>,
) -> Result<bool, CliError> {
    loop {
        let frame = match conn.next_incoming().await {
            Ok(Incoming::Frame(frame)) => frame,
            Ok(Incoming::Closed(close)) => return closed(close),
            Err(e) => {
                eprintln!("connection lost: {e}");
                return Ok(false);
            }
        };
        match frame["type"].as_str() {
            Some("message") => {
                let id = field(&frame, "id").to_owned();
                if seen.insert(&id) {
                    print(json, &frame, || describe(&frame));
                    *received += 1;
                }
                if conn.ack(std::slice::from_ref(&id)).await.is_err() {
                    return Ok(false);
                }
                if count.is_some_and(|n| *received >= n) {
                    return Ok(true);
                }
            }
            Some("gap") => {
                let dropped = frame["dropped"].as_u64().unwrap_or(0);
                print(json, &frame, || {
                    format!("gap: {dropped} messages were dropped by the mailbox cap")
                });
            }
            Some("error") => eprintln!("server: {frame}"),
            _ => {}
        }
    }
}

/// One line for a message: id, title, body, data.
fn describe(frame: &Value) -> String {
    let mut line = field(frame, "id").to_owned();
    let n = &frame["notification"];
    for part in [field(n, "title"), field(n, "body")] {
        if !part.is_empty() {
            line.push_str("  ");
            line.push_str(part);
        }
    }
    if frame["data"].is_object() {
        line.push_str("  ");
        line.push_str(&frame["data"].to_string());
    }
    line
}

/// What a close code means for a listener (see `docs/protocol.md`, close codes).
fn closed(close: Option<(u16, String)>) -> Result<bool, CliError> {
    let Some((code, reason)) = close else {
        eprintln!("connection closed");
        return Ok(false);
    };
    let api = |status: StatusCode, code: &str| {
        Err(CliError::Client(ClientError::Api {
            status,
            code: code.into(),
            message: reason.clone(),
        }))
    };
    match code {
        4001 => api(StatusCode::UNAUTHORIZED, "unauthenticated"),
        4003 => api(StatusCode::FORBIDDEN, "forbidden"),
        4004 => api(StatusCode::NOT_FOUND, "not_found"),
        4009 => api(StatusCode::CONFLICT, "conflict"),
        1002 | 1003 | 1008 => Err(CliError::Other(format!("closed {code}: {reason}"))),
        _ => {
            eprintln!("closed {code}: {reason}");
            Ok(false)
        }
    }
}

/// A refused upgrade ends the listener (wrong token, suspended app); an unreachable
/// server or a 5xx is retried.
fn refused_upgrade(e: ClientError) -> Result<(), CliError> {
    if let ClientError::Ws(tokio_tungstenite::tungstenite::Error::Http(resp)) = &e {
        let status = resp.status();
        if status.is_client_error() {
            let body: Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let reply = crate::client::Reply { status, body };
            return reply
                .expect_status(StatusCode::SWITCHING_PROTOCOLS)
                .map(drop)
                .map_err(Into::into);
        }
    } else if !e.is_unreachable() {
        return Err(e.into());
    }
    eprintln!("cannot connect: {e}");
    Ok(())
}

/// Exponential backoff from 250 ms to 30 s, with "equal jitter" (half fixed, half random).
fn backoff(attempt: u32) -> Duration {
    let ceiling = 250u64.saturating_mul(1 << attempt.min(7)).min(30_000);
    Duration::from_millis(ceiling / 2 + rand::random_range(0..=ceiling / 2))
}

impl ListenArgs {
    pub(super) fn json(&self) -> bool {
        self.server.json
    }
}
