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
        let mut child = Command::new(env!("CARGO_BIN_EXE_warbler"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("WARBLER_LOG", "warn")
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
