//! The command-line client against a real server: `send` → `listen` round trip, the
//! management commands, and the documented exit codes.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::*;

/// What one run of the binary printed, and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|_| panic!("not JSON: {} / {}", self.stdout, self.stderr))
    }
}

/// `warbler ARGS --url … --data-dir …` against `s`, with a clean environment for credentials.
fn command(s: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warbler"));
    cmd.args(args)
        .arg("--url")
        .arg(format!("https://{}", s.addr))
        .arg("--data-dir")
        .arg(s.data.path())
        .env_remove("WARBLER_API_KEY")
        .env_remove("WARBLER_ADMIN_TOKEN")
        .env_remove("WARBLER_CLIENT_KEY")
        .env_remove("WARBLER_DEVICE_TOKEN")
        .kill_on_drop(true);
    cmd
}

async fn cli(s: &TestServer, args: &[&str]) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(30), command(s, args).output())
        .await
        .expect("the command finishes")
        .expect("run warbler");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The next line a child printed, as JSON (panics after 10 s).
async fn next_json_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line in time")
        .expect("read stdout")
        .expect("a line before the end");
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

#[tokio::test]
async fn send_then_listen_prints_the_message_and_its_ack_leaves_nothing_pending() {
    let s = start().await;
    let mut listen = command(&s, &["listen", "--json", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn listen");
    let mut lines = BufReader::new(listen.stdout.take().expect("stdout")).lines();
    let registered = next_json_line(&mut lines).await;
    assert_eq!(registered["type"], "registered");
    let device = registered["device_id"]
        .as_str()
        .expect("device_id")
        .to_owned();
    let token = registered["token"].as_str().expect("token").to_owned();

    let sent = cli(
        &s,
        &[
            "send",
            "--device",
            &device,
            "--title",
            "Hello",
            "--body",
            "from the CLI",
            "--data",
            r#"{"order":42}"#,
            "--json",
        ],
    )
    .await;
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let id = sent.json()["id"].as_str().expect("id").to_owned();

    let message = next_json_line(&mut lines).await;
    assert_eq!(message["id"], id.as_str());
    assert_eq!(message["notification"]["title"], "Hello");
    assert_eq!(message["notification"]["body"], "from the CLI");
    assert_eq!(message["data"]["order"], 42);
    let status = tokio::time::timeout(Duration::from_secs(10), listen.wait())
        .await
        .expect("listen exits after --count 1")
        .expect("wait");
    assert!(status.success(), "listen exit: {status}");

    s.status_until(&id, "acked", |v| v["counts"]["acked"] == 1)
        .await;
    let mut again = s.connect(&token).await;
    assert_silent(&mut again, Duration::from_millis(500)).await;
    s.stop().await;
}

#[tokio::test]
async fn listen_prints_text_lines_and_reuses_a_device_token() {
    let s = start().await;
    let (device, token) = s.register(None).await;
    let id = s.push_ok(serde_json::json!({"to": {"device": device}, "notification": {"title": "Pending"}, "data": {"a": 1}})).await;
    let run = cli(&s, &["listen", "--token", &token, "--count", "1"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), format!(r#"{id}  Pending  {{"a":1}}"#));
    s.status_until(&id, "acked", |v| v["counts"]["acked"] == 1)
        .await;
    s.stop().await;
}

#[tokio::test]
async fn app_and_key_commands_create_list_suspend_revoke_and_delete() {
    let s = start().await;
    let created = cli(&s, &["app", "create", "shop", "--json"]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(created.json()["id"], "shop");
    assert!(created.json()["client_key"].as_str().is_some());

    let listed = cli(&s, &["app", "list", "--json"]).await;
    let names: Vec<_> = listed.json()["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(names, ["demo", "shop"]);
    let text = cli(&s, &["app", "list"]).await;
    assert!(text.stdout.contains("shop") && text.stdout.contains("active"));

    let key = cli(
        &s,
        &["key", "create", "shop", "--scopes", "push,read", "--json"],
    )
    .await;
    assert_eq!(key.code, 0, "{}", key.stderr);
    let key_id = key.json()["id"].as_str().expect("id").to_owned();
    let secret = key.json()["key"].as_str().expect("key").to_owned();
    let keys = cli(&s, &["key", "list", "shop", "--json"]).await;
    assert!(keys.stdout.contains(&key_id) && !keys.stdout.contains(&secret));

    let send = ["send", "--all", "--title", "hi", "--api-key", &secret];
    assert_eq!(cli(&s, &send).await.code, 0);

    let suspended = cli(&s, &["app", "suspend", "shop", "--json"]).await;
    assert_eq!(suspended.json()["suspended"], true);
    assert_eq!(cli(&s, &send).await.code, 5, "suspended app: forbidden");
    let resumed = cli(&s, &["app", "resume", "shop"]).await;
    assert_eq!(resumed.stdout.trim(), "app shop is active");
    assert_eq!(cli(&s, &send).await.code, 0);

    let revoked = cli(&s, &["key", "revoke", "shop", &key_id]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    let refused = cli(&s, &send).await;
    assert_eq!(refused.code, 4, "revoked key: unauthenticated");
    assert!(
        refused.stderr.contains("unauthenticated"),
        "{}",
        refused.stderr
    );

    assert_eq!(cli(&s, &["app", "delete", "shop"]).await.code, 0);
    assert_eq!(cli(&s, &["app", "get", "shop"]).await.code, 6);
    s.stop().await;
}

#[tokio::test]
async fn failures_exit_with_the_documented_codes() {
    let s = start().await;
    let bad_key = cli(
        &s,
        &["send", "--all", "--api-key", "wak_key_bogus_x", "--json"],
    )
    .await;
    assert_eq!(bad_key.code, 4);
    assert_eq!(bad_key.json()["error"]["code"], "unauthenticated");

    let unknown = cli(
        &s,
        &["send", "--device", "dev_nosuchdevice", "--title", "x"],
    )
    .await;
    assert_eq!(unknown.code, 6);
    assert!(unknown.stderr.contains("not_found"), "{}", unknown.stderr);

    let invalid = cli(&s, &["send", "--all", "--ttl", "99999999999"]).await;
    assert_eq!(invalid.code, 3, "{}", invalid.stderr);
    assert_eq!(
        cli(&s, &["app", "create", "demo"]).await.code,
        7,
        "conflict"
    );
    let read_only = cli(&s, &["key", "create", "demo", "--scopes", "read", "--json"]).await;
    let read_key = read_only.json()["key"].as_str().expect("key").to_owned();
    let forbidden = cli(&s, &["send", "--all", "--api-key", &read_key]).await;
    assert_eq!(forbidden.code, 5, "{}", forbidden.stderr);

    assert_eq!(cli(&s, &["send", "--all", "--data", "[1]"]).await.code, 2);
    assert_eq!(cli(&s, &["send", "--title", "no target"]).await.code, 2);
    let revoked_device = cli(&s, &["listen", "--token", "wdt_dev_nosuchdevice_x"]).await;
    assert_eq!(revoked_device.code, 4, "{}", revoked_device.stderr);

    let mut unreachable = Command::new(env!("CARGO_BIN_EXE_warbler"));
    unreachable
        .args(["app", "list", "--url", "https://127.0.0.1:1", "--data-dir"])
        .arg(s.data.path());
    let out = unreachable.output().await.expect("run");
    assert_eq!(out.status.code(), Some(10));
    s.stop().await;
}

#[tokio::test]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_warbler"))
            .args(["completions", shell])
            .output()
            .await
            .expect("run");
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("listen") && script.contains("api-key"),
            "{shell}"
        );
    }
}
