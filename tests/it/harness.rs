//! Test harness: start the server in-process or as the real binary, and short helpers for
//! the calls most tests make.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use warbler::app::{App, InitialCredentials};
use warbler::client::{Client, DeviceConnection, Reply};
use warbler::config::Config;

/// A server running in this process.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub data: tempfile::TempDir,
    pub creds: InitialCredentials,
    pub client: Client,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn test_config(data: &Path) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.server.data_dir = data.to_path_buf();
    c
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data.path());
    tweak(&mut config);
    let app = App::build(config).await.expect("server builds");
    let addr = app.local_addr();
    let creds = app.initial_credentials().cloned().expect("first start");
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run());
    let client =
        Client::new(&format!("https://{addr}"), &data.path().join("tls/ca.crt")).expect("client");
    TestServer {
        addr,
        data,
        creds,
        client,
        shutdown,
        task,
    }
}

impl TestServer {
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server drains in time")
            .expect("server task");
        self.data
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.client
            .call(method, path, token, body.as_ref())
            .await
            .expect("request")
    }

    /// Registers a device of the demo app; returns (device id, token).
    pub async fn register(&self, user_token: Option<&str>) -> (String, String) {
        register_with(&self.client, &self.creds.client_key, user_token).await
    }

    /// Pushes to a target with the demo API key; returns the reply.
    pub async fn push(&self, to: Value, title: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/messages",
            Some(&self.creds.api_key),
            Some(json!({"to": to, "notification": {"title": title}})),
        )
        .await
    }

    pub async fn connect(&self, token: &str) -> DeviceConnection {
        self.client
            .connect(token, true)
            .await
            .expect("device connects")
    }
}

pub async fn register_with(
    client: &Client,
    client_key: &str,
    user_token: Option<&str>,
) -> (String, String) {
    let mut body = json!({"platform": "web"});
    if let Some(t) = user_token {
        body["user_token"] = json!(t);
    }
    let r = client
        .call(
            Method::POST,
            "/v1/devices/register",
            Some(client_key),
            Some(&body),
        )
        .await
        .expect("register");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (
        r.body["device_id"].as_str().expect("device_id").to_owned(),
        r.body["token"].as_str().expect("token").to_owned(),
    )
}

/// Reads frames until `n` messages arrived (or panics after `within`).
pub async fn recv_messages(conn: &mut DeviceConnection, n: usize, within: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        let frame = tokio::time::timeout_at(deadline, conn.next_frame())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived in {within:?}", got.len()))
            .expect("frame")
            .unwrap_or_else(|| panic!("closed after {} of {n} messages", got.len()));
        if frame["type"] == "message" {
            got.push(frame);
        }
    }
    got
}

/// Asserts that no message frame arrives within `wait`.
pub async fn assert_silent(conn: &mut DeviceConnection, wait: Duration) {
    if let Ok(Ok(Some(frame))) = tokio::time::timeout(wait, conn.next_frame()).await {
        panic!("expected no frame, got {frame}");
    }
}

pub fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// HS256 user token signed with `secret`.
pub fn user_token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

pub fn now_secs() -> u64 {
    warbler::domain::now_ms() / 1000
}

/// The real `warbler` binary serving a data dir.
pub struct BinaryServer {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
}

impl BinaryServer {
    pub fn start(data: &Path) -> Self {
        Self::start_capturing(data).0
    }

    /// Like [`BinaryServer::start`], also returning every stdout line printed before
    /// (and including) the "listening on" line.
    pub fn start_capturing(data: &Path) -> (Self, Vec<String>) {
        Self::start_with(data, &[])
    }

    /// Like [`BinaryServer::start_capturing`], with extra environment variables (for
    /// example `WARBLER_STORAGE_CHECKPOINT_MS`).
    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> (Self, Vec<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warbler"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("WARBLER_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn warbler");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let url = loop {
            let line = lines
                .next()
                .expect("warbler printed its address before exiting")
                .expect("read stdout");
            printed.push(line.clone());
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let server = Self {
            child,
            url,
            data: data.to_path_buf(),
        };
        (server, printed)
    }

    /// Sends SIGTERM through `kill -TERM <pid>`.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    /// Waits up to `within` for the process to exit; panics if it does not. Async so that
    /// the test's own client connections keep answering the server while it drains.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "warbler did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits up to `within` for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_exit(within).await
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.data.join("tls/ca.crt")).expect("client")
    }

    pub fn creds(&self) -> InitialCredentials {
        let text = std::fs::read_to_string(self.data.join("initial-credentials.json"))
            .expect("credentials file");
        serde_json::from_str(&text).expect("credentials json")
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a child until it exits or `within` passes (`None`: still running).
pub fn wait_for_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Restarts, polling, and HTTP clients for SSE, long-poll and custom headers.
// ---------------------------------------------------------------------------------------

/// Starts a server on an existing data dir (a restart). The credentials come from the
/// first start's `initial-credentials.json`, which stays in the data dir.
pub async fn start_in(data: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = test_config(data.path());
    tweak(&mut config);
    let app = App::build(config).await.expect("server builds");
    let addr = app.local_addr();
    let creds = match app.initial_credentials() {
        Some(c) => c.clone(),
        None => {
            let text = std::fs::read_to_string(data.path().join("initial-credentials.json"))
                .expect("credentials file");
            serde_json::from_str(&text).expect("credentials json")
        }
    };
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run());
    let client =
        Client::new(&format!("https://{addr}"), &data.path().join("tls/ca.crt")).expect("client");
    TestServer {
        addr,
        data,
        creds,
        client,
        shutdown,
        task,
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Total size in bytes of every file under `dir`.
///
/// The store's journal is left out: it holds at most the writes since the last checkpoint
/// (a second or so) and is emptied by each, so it is no part of what the data dir keeps,
/// and it changes with every sweep, so a size including it never settles.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("dir entry");
        let meta = entry.metadata().expect("metadata");
        if entry.file_name() == "warbler.journal" {
            continue;
        }
        if meta.is_dir() {
            total += dir_size(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// An HTTP response read whole: status, headers and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct RawReply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

/// A server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// An open `text/event-stream` response, read incrementally.
pub struct SseStream {
    body: hyper::body::Incoming,
    buf: String,
    /// Comment lines (heartbeats) seen so far.
    pub comments: usize,
    conn: tokio::task::JoinHandle<()>,
    _sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl Drop for SseStream {
    fn drop(&mut self) {
        // Closes the TCP connection, so the server sees the client go.
        self.conn.abort();
    }
}

impl SseStream {
    /// The next event (comments skipped); `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let record: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in record.lines() {
                    if line.is_empty() {
                        continue;
                    }
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "event" => value.clone_into(&mut event.event),
                        "id" => event.id = Some(value.to_owned()),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf
                    .push_str(std::str::from_utf8(&data).expect("UTF-8 stream"));
            }
        }
    }

    /// The next event, or a panic after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.next_event())
            .await
            .unwrap_or_else(|_| panic!("no SSE event within {within:?}"))
    }

    /// The next `n` `message` events (other events skipped), as JSON frames.
    pub async fn messages(&mut self, n: usize, within: Duration) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let ev = tokio::time::timeout_at(deadline, self.next_event())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} SSE messages in {within:?}", out.len()))
                .unwrap_or_else(|| panic!("SSE stream ended after {} of {n}", out.len()));
            if ev.event == "message" {
                let id = ev.id.clone().expect("message events carry an id");
                out.push((id, ev.json()));
            }
        }
        out
    }

    /// Asserts that no `message` event arrives within `wait` (comments and others allowed).
    pub async fn assert_no_message(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(ev) = tokio::time::timeout_at(deadline, self.next_event()).await {
            match ev {
                Some(ev) if ev.event == "message" => panic!("expected no message, got {ev:?}"),
                Some(_) => {}
                None => return,
            }
        }
    }
}

impl TestServer {
    /// One HTTP/1.1 connection over TLS, trusting the server's CA.
    pub async fn http1(
        &self,
    ) -> (
        hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
        tokio::task::JoinHandle<()>,
    ) {
        let ca = self.data.path().join("tls/ca.crt");
        let tls = warbler::tls::client_config_trusting(&ca, &[warbler::tls::ALPN_HTTP11])
            .expect("tls config");
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("tcp connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .expect("tls handshake");
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("http1 handshake");
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (sender, task)
    }

    async fn send_http1(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (
        hyper::Response<hyper::body::Incoming>,
        hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (mut sender, task) = self.http1().await;
        let host = format!("localhost:{}", self.addr.port());
        let req = json_request(method, path, &host, headers, body);
        let resp = sender.send_request(req).await.expect("response");
        (resp, sender, task)
    }

    /// A request with arbitrary headers, read whole.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> RawReply {
        use http_body_util::BodyExt;
        let (resp, _sender, task) = self.send_http1(method, path, headers, body).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        task.abort();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("body is not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        RawReply {
            status,
            headers,
            body,
        }
    }

    /// A request with arbitrary headers; the body is returned as bytes (any content type).
    pub async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, hyper::HeaderMap, bytes::Bytes) {
        use http_body_util::BodyExt;
        let (resp, _sender, task) = self.send_http1(method, path, headers, body).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        task.abort();
        (status, headers, bytes)
    }

    /// A request read whole as text (for non-JSON answers such as `/metrics`).
    pub async fn request_text(&self, method: Method, path: &str) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let (resp, _sender, task) = self.send_http1(method, path, &[], None).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        task.abort();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Opens `GET path` as an event stream. `Err` carries a refusal (status and JSON body).
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Result<SseStream, RawReply> {
        use http_body_util::BodyExt;
        let mut all = vec![("accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let (resp, sender, conn) = self.send_http1(Method::GET, path, &all, None).await;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            conn.abort();
            return Err(RawReply {
                status,
                headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "SSE content type: {content_type}"
        );
        Ok(SseStream {
            body: resp.into_body(),
            buf: String::new(),
            comments: 0,
            conn,
            _sender: sender,
        })
    }

    /// `GET /v1/messages/{id}` with the demo API key.
    pub async fn status(&self, id: &str) -> Value {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/messages/{id}"),
                Some(&self.creds.api_key),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// Polls a message's status until `pred` holds; returns it.
    pub async fn status_until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let last = self.status(id).await;
            if pred(&last) {
                return last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "status of {id} never got {what}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /v1/messages` with a full body and the demo API key.
    pub async fn push_body(&self, body: Value) -> Reply {
        self.call(
            Method::POST,
            "/v1/messages",
            Some(&self.creds.api_key),
            Some(body),
        )
        .await
    }

    /// Pushes and asserts 202; returns the message id.
    pub async fn push_ok(&self, body: Value) -> String {
        let r = self.push_body(body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    /// `PATCH /v1/devices/{id}` with the demo API key.
    pub async fn patch_device(&self, device: &str, body: Value) -> Reply {
        self.call(
            Method::PATCH,
            &format!("/v1/devices/{device}"),
            Some(&self.creds.api_key),
            Some(body),
        )
        .await
    }

    /// `PATCH /v1/apps/{app}` with the admin token; asserts 200.
    pub async fn patch_app(&self, app: &str, body: Value) -> Value {
        let r = self
            .call(
                Method::PATCH,
                &format!("/v1/apps/{app}"),
                Some(&self.creds.admin_token),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// Creates an app with an all-scopes API key: (client key, api key, signing secret).
    pub async fn create_app(&self, name: &str) -> (String, String, String) {
        let r = self
            .call(
                Method::POST,
                "/v1/apps",
                Some(&self.creds.admin_token),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let client_key = r.body["client_key"]
            .as_str()
            .expect("client_key")
            .to_owned();
        let secret = r.body["signing_secret"]
            .as_str()
            .expect("secret")
            .to_owned();
        let k = self
            .call(
                Method::POST,
                &format!("/v1/apps/{name}/keys"),
                Some(&self.creds.admin_token),
                Some(json!({"name": "backend", "scopes": ["push", "read", "manage"]})),
            )
            .await;
        assert_eq!(k.status, StatusCode::CREATED, "{}", k.body);
        (
            client_key,
            k.body["key"].as_str().expect("key").to_owned(),
            secret,
        )
    }

    /// `GET /v1/poll` with the token in the header (`?wait=` etc. in `query`).
    pub async fn poll(&self, token: &str, query: &str) -> Reply {
        self.call(Method::GET, &format!("/v1/poll?{query}"), Some(token), None)
            .await
    }

    /// `POST /v1/ack` with the device token.
    pub async fn http_ack(&self, token: &str, ids: &[String]) -> Reply {
        self.call(
            Method::POST,
            "/v1/ack",
            Some(token),
            Some(json!({"ids": ids})),
        )
        .await
    }
}

/// Sends a raw JSON client frame on a WebSocket.
pub async fn send_frame(conn: &mut DeviceConnection, frame: Value) {
    use futures_util::SinkExt;
    conn.ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            frame.to_string().into(),
        ))
        .await
        .expect("send frame");
}

/// The next frame of any type, or a panic after `within`.
pub async fn next_frame_within(conn: &mut DeviceConnection, within: Duration) -> Value {
    tokio::time::timeout(within, conn.next_frame())
        .await
        .unwrap_or_else(|_| panic!("no frame within {within:?}"))
        .expect("frame")
        .expect("connection open")
}

/// A request for an HTTP/1.1 client connection, with a JSON body when there is one.
pub fn json_request(
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            bytes::Bytes::from(b.to_string())
        }
        None => bytes::Bytes::new(),
    };
    req.body(http_body_util::Full::new(bytes)).expect("request")
}
