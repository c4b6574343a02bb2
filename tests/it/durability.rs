//! The real binary on a real data dir: durability across SIGKILL, the first start's files and
//! their modes, SIGTERM draining, the data-dir lock, and `warbler config check`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use warbler::client::{Client, DeviceConnection};

use crate::harness::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `warbler ARGS` to completion (killing it after `within`); returns status, stdout
/// and stderr.
fn run_warbler(args: &[&std::ffi::OsStr], within: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warbler"))
        .args(args)
        .env("WARBLER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warbler");
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("stderr")));
    let Some(status) = wait_for_exit(&mut child, within) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "warbler {args:?} still running after {within:?}; stderr: {}",
            err.join().unwrap_or_default()
        );
    };
    (
        status,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Pushes `count` data messages to `device` one after another; returns the accepted ids in
/// acceptance order.
async fn push_sequentially(
    client: Client,
    api_key: String,
    device: String,
    task: usize,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let body = json!({"to": {"device": device}, "data": {"task": task, "i": i}});
        let r = client
            .call(Method::POST, "/v1/messages", Some(&api_key), Some(&body))
            .await
            .expect("push request");
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["recipients"], 1, "{}", r.body);
        ids.push(r.body["id"].as_str().expect("id").to_owned());
    }
    ids
}

/// Polls `GET /v1/messages/{id}` until every id reports `acked`.
async fn wait_until_acked(client: &Client, api_key: &str, ids: &[String], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut waiting: Vec<&String> = ids.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for id in waiting {
            let r = client
                .call(
                    Method::GET,
                    &format!("/v1/messages/{id}"),
                    Some(api_key),
                    None,
                )
                .await
                .expect("status request");
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            if r.body["state"] != "acked" {
                still.push(id);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} messages still not acked after {within:?}, e.g. {}",
                waiting.len(),
                waiting[0]
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

fn assert_increasing(seqs: &[u64]) {
    if let Some(&[a, b]) = seqs.windows(2).find(|w| w[0] >= w[1]) {
        panic!("seq must increase strictly, found {a} then {b}");
    }
}

/// Every id of each sender appears in the delivered order in the order that sender had it
/// accepted (each push was accepted before the next one was sent).
fn assert_each_sender_in_order(delivered: &[String], per_sender: &[Vec<String>]) {
    let position: HashMap<&str, usize> = delivered
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for (t, ids) in per_sender.iter().enumerate() {
        let pos: Vec<usize> = ids.iter().map(|id| position[id.as_str()]).collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "sender {t}'s messages were delivered out of acceptance order: {pos:?}"
        );
    }
}

#[tokio::test]
async fn offline_device_gets_all_200_pushes_in_order_after_kill_9_and_restart() {
    kill_9_and_restart(&[], false).await;
}

/// The same with checkpoints a minute apart: at the kill the pushes are in the journal
/// only, and the restart must apply it.
#[tokio::test]
async fn pushes_only_in_the_journal_survive_kill_9_and_restart() {
    kill_9_and_restart(&[("WARBLER_STORAGE_CHECKPOINT_MS", "60000")], true).await;
}

async fn kill_9_and_restart(env: &[(&str, &str)], journal_only: bool) {
    let data = tempfile::tempdir().expect("tempdir");
    let server = BinaryServer::start_with(data.path(), env).0;
    let creds = server.creds();
    let client = server.client();
    let (device, token) = register_with(&client, &creds.client_key, None).await;

    // 8 senders x 25 pushes, concurrently, to a device that is not connected.
    let senders: Vec<_> = (0..8)
        .map(|t| {
            tokio::spawn(push_sequentially(
                client.clone(),
                creds.api_key.clone(),
                device.clone(),
                t,
                25,
            ))
        })
        .collect();
    let mut per_sender = Vec::new();
    for s in senders {
        per_sender.push(s.await.expect("sender task"));
    }
    let accepted: HashSet<String> = per_sender.iter().flatten().cloned().collect();
    assert_eq!(accepted.len(), 200, "200 distinct ids accepted");
    // What each id carried, to check the payload survived too.
    let mut payload_of = HashMap::new();
    for (t, ids) in per_sender.iter().enumerate() {
        for (i, id) in ids.iter().enumerate() {
            payload_of.insert(id.clone(), json!({"task": t, "i": i}));
        }
    }

    // 202 means on disk: SIGKILL, no drain, no chance to flush anything.
    server.kill_9();
    let journal = std::fs::metadata(data.path().join("warbler.journal")).map_or(0, |m| m.len());
    if journal_only {
        assert!(
            journal > 10_000,
            "the 200 pushes are in the journal ({journal} bytes)"
        );
    }
    let server = BinaryServer::start_with(data.path(), env).0;
    let client = server.client();
    let mut conn = client.connect(&token, true).await.expect("reconnect");
    assert_eq!(conn.device_id, device);
    let got = recv_messages(&mut conn, 200, Duration::from_secs(30)).await;
    // Exactly once: nothing beyond the 200 follows (they are unacked, so a duplicate
    // would be sent right behind them).
    assert_silent(&mut conn, Duration::from_millis(500)).await;
    assert_increasing(&seqs(&got));
    let got_ids = ids(&got);
    let distinct: HashSet<String> = got_ids.iter().cloned().collect();
    assert_eq!(distinct.len(), 200, "no message delivered twice");
    assert_eq!(distinct, accepted, "exactly the accepted messages");
    assert_each_sender_in_order(&got_ids, &per_sender);
    for m in &got {
        let id = m["id"].as_str().unwrap_or_default();
        assert_eq!(m["data"], payload_of[id], "payload of {id}");
    }

    conn.ack(&got_ids).await.expect("ack");
    wait_until_acked(&client, &creds.api_key, &got_ids, Duration::from_secs(15)).await;
    conn.close().await.expect("close");
    let mut again: DeviceConnection = client.connect(&token, true).await.expect("reconnect");
    assert_silent(&mut again, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn first_start_writes_credentials_once_with_private_modes() {
    let data = tempfile::tempdir().expect("tempdir");
    let (mut server, printed) = BinaryServer::start_capturing(data.path());
    let path = data.path().join("initial-credentials.json");
    assert_eq!(mode(&path), 0o600, "initial-credentials.json mode");
    for key in ["tls/ca.key", "tls/server.key"] {
        assert_eq!(mode(&data.path().join(key)), 0o600, "{key} mode");
    }
    let text = std::fs::read_to_string(&path).expect("credentials file");
    let json: Value = serde_json::from_str(&text).expect("credentials are JSON");
    let obj = json.as_object().expect("credentials are an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "admin_password",
            "admin_token",
            "admin_user",
            "api_key",
            "app",
            "ca_cert",
            "client_key"
        ]
    );
    for (k, v) in obj {
        assert!(
            v.as_str().is_some_and(|s| !s.is_empty()),
            "{k} is a non-empty string"
        );
    }
    assert_eq!(json["admin_user"], "admin");
    assert_eq!(json["app"], "demo");
    let ca = std::path::absolute(data.path().join("tls/ca.crt")).expect("absolute");
    assert_eq!(Path::new(json["ca_cert"].as_str().unwrap_or_default()), ca);
    assert!(ca.is_file(), "ca_cert points at the CA certificate");

    // Printed once, on the first start.
    let secrets: Vec<&str> = ["admin_password", "admin_token", "api_key", "client_key"]
        .iter()
        .map(|k| json[*k].as_str().unwrap_or_default())
        .collect();
    let first_out = printed.join("\n");
    for s in &secrets {
        assert!(first_out.contains(s), "the first start prints {s}");
    }
    // They work.
    let creds = server.creds();
    let r = server
        .client()
        .call(Method::GET, "/v1/apps", Some(&creds.admin_token), None)
        .await
        .expect("list apps");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let meta = std::fs::metadata(&path).expect("metadata");
    let before = (text.clone(), meta.ino(), meta.mtime(), meta.mtime_nsec());
    // An idle client connection does not hold the drain up to its 10 s deadline.
    let status = server.terminate(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0: {status}");

    let (mut second, printed) = BinaryServer::start_capturing(data.path());
    let second_out = printed.join("\n");
    for s in &secrets {
        assert!(
            !second_out.contains(s),
            "the second start must not print credentials: {second_out}"
        );
    }
    assert!(
        !second_out.to_lowercase().contains("credentials"),
        "{second_out}"
    );
    let text = std::fs::read_to_string(&path).expect("credentials file");
    let meta = std::fs::metadata(&path).expect("metadata");
    assert_eq!(
        (text, meta.ino(), meta.mtime(), meta.mtime_nsec()),
        before,
        "initial-credentials.json is never rewritten"
    );
    assert_eq!(mode(&path), 0o600);
    // The first start's credentials still hold; no new owner was made.
    let r = second
        .client()
        .call(Method::GET, "/v1/apps", Some(&creds.admin_token), None)
        .await
        .expect("list apps");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let status = second.terminate(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0: {status}");
}

/// Reads message frames until every id of `accepted` arrived (within 30 s), then for as long
/// as more keep coming (pushes whose 202 was lost); panics on a duplicate. Returns the ids
/// seen and their seqs in arrival order.
async fn receive_at_least(
    conn: &mut DeviceConnection,
    accepted: &[String],
) -> (HashSet<String>, Vec<u64>) {
    let mut missing: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let mut seq_list = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Until everything accepted arrived; then a short quiet period for the extras (pushes
        // whose 202 was lost in the shutdown) that at-least-once allows.
        let wait = if missing.is_empty() {
            tokio::time::Instant::now() + Duration::from_millis(500)
        } else {
            deadline
        };
        let Ok(frame) = tokio::time::timeout_at(wait, conn.next_frame()).await else {
            assert!(
                missing.is_empty(),
                "{} of {} accepted pushes lost across SIGTERM, e.g. {:?}",
                missing.len(),
                accepted.len(),
                missing.iter().next()
            );
            break;
        };
        let frame = frame.expect("frame").expect("connection stays open");
        if frame["type"] != "message" {
            continue;
        }
        let id = frame["id"].as_str().expect("id").to_owned();
        missing.remove(id.as_str());
        assert!(seen.insert(id.clone()), "{id} delivered twice");
        seq_list.push(frame["seq"].as_u64().expect("seq"));
    }
    (seen, seq_list)
}

#[tokio::test]
async fn sigterm_drains_in_flight_pushes_closes_sessions_and_exits_zero() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = BinaryServer::start(data.path());
    let creds = server.creds();
    let client = server.client();
    let (_listener, listener_token) = register_with(&client, &creds.client_key, None).await;
    let (target, target_token) = register_with(&client, &creds.client_key, None).await;
    let mut live = client
        .connect(&listener_token, true)
        .await
        .expect("connect");

    // Four senders push to the offline target until the server goes away.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (client, key, target) = (client.clone(), creds.api_key.clone(), target.clone());
            let (accepted, count) = (Arc::clone(&accepted), Arc::clone(&count));
            tokio::spawn(async move {
                for i in 0..100_000 {
                    let body = json!({"to": {"device": target}, "data": {"i": i}});
                    let Ok(r) = client
                        .call(Method::POST, "/v1/messages", Some(&key), Some(&body))
                        .await
                    else {
                        return; // the server stopped accepting
                    };
                    match r.status {
                        StatusCode::ACCEPTED => {
                            let id = r.body["id"].as_str().expect("id").to_owned();
                            accepted.lock().expect("lock").push(id);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        // Refused while draining, with nothing written: allowed.
                        StatusCode::SERVICE_UNAVAILABLE => return,
                        other => panic!("unexpected {other} while draining: {}", r.body),
                    }
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count.load(Ordering::SeqCst) < 40 {
        assert!(tokio::time::Instant::now() < deadline, "pushes too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.sigterm();
    // Live sessions are closed with "going away".
    let code = tokio::time::timeout(Duration::from_secs(15), async {
        use futures_util::StreamExt;
        let mut code = None;
        while let Some(Ok(msg)) = live.ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = msg {
                code = Some(u16::from(f.code));
            }
        }
        code
    })
    .await
    .expect("the session ends within 15 s of SIGTERM");
    assert_eq!(code, Some(1001), "sessions close with going away");
    for s in senders {
        tokio::time::timeout(Duration::from_secs(15), s)
            .await
            .expect("senders stop once the server is gone")
            .expect("sender task");
    }
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0: {status}");

    // Every push answered 202 before the exit is there after a restart.
    let accepted: Vec<String> = accepted.lock().expect("lock").clone();
    let server = BinaryServer::start(data.path());
    let client = server.client();
    let mut conn = client.connect(&target_token, true).await.expect("connect");
    let (seen, seq_list) = receive_at_least(&mut conn, &accepted).await;
    assert_increasing(&seq_list);
    let extras = seen.len() - accepted.len();
    assert!(
        extras <= 4,
        "at most one unanswered push per sender: {extras}"
    );
}

#[tokio::test]
async fn second_instance_on_the_same_data_dir_is_refused_with_a_clear_message() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = BinaryServer::start(data.path());
    let creds_path = data.path().join("initial-credentials.json");
    let creds_before = std::fs::read(&creds_path).expect("credentials");

    let started = std::time::Instant::now();
    let (status, stdout, stderr) = run_warbler(
        &[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data".as_ref(),
            data.path().as_os_str(),
        ],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "the second instance must fail: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "and quickly: {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("in use") && stderr.contains(&data.path().display().to_string()),
        "stderr names the data dir and says it is in use: {stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert_eq!(
        std::fs::read(&creds_path).expect("credentials"),
        creds_before,
        "the refused instance wrote nothing"
    );
    // The first instance is unaffected.
    let r = first
        .client()
        .call(Method::GET, "/readyz", None, None)
        .await
        .expect("readyz");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[test]
fn config_check_accepts_good_files_and_rejects_bad_ones_with_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let contract_example = r#"
[server]
listen = "127.0.0.1:8443"          # restart to change
hostnames = ["push.corp.internal"] # extra SANs for the bootstrapped certificate
[storage]
durability = "immediate"           # or "relaxed" (fsync batched on a timer)
[tls]
mode = "auto"                      # auto (bootstrap CA), files (cert + key below), off
cert = "/etc/warbler/tls/server.crt"
key = "/etc/warbler/tls/server.key"
[limits]                           # defaults for every app; an app may override
max_message_bytes = 4096
pushes_per_second = 1000
[log]
level = "info"
format = "text"                    # or "json"
"#;
    let check = |path: &Path| {
        run_warbler(
            &["config".as_ref(), "check".as_ref(), path.as_os_str()],
            Duration::from_secs(10),
        )
    };

    let good = write("good.toml", contract_example);
    let (status, stdout, stderr) = check(&good);
    assert_eq!(status.code(), Some(0), "contract example: {stderr}");
    assert!(stdout.contains("ok"), "{stdout}");

    let partial = write("partial.toml", "[log]\nformat = \"json\"\n");
    let (status, _, stderr) = check(&partial);
    assert_eq!(status.code(), Some(0), "every key is optional: {stderr}");

    // (file, contents, what stderr must mention)
    let bad: [(&str, &str, &str); 6] = [
        (
            "unknown.toml",
            "[server]\nlisten_address = \"127.0.0.1:1\"\n",
            "listen_address",
        ),
        (
            "unknown-section.toml",
            "[sever]\nlisten = \"127.0.0.1:1\"\n",
            "sever",
        ),
        ("empty.toml", "", "empty"),
        ("blank.toml", "  \n\n", "empty"),
        (
            "range.toml",
            "[limits]\nmax_message_bytes = 1\n",
            "limits.max_message_bytes",
        ),
        ("syntax.toml", "[server\nlisten = 1\n", "syntax.toml"),
    ];
    for (name, text, mention) in bad {
        let path = write(name, text);
        let (status, stdout, stderr) = check(&path);
        assert_eq!(status.code(), Some(64), "{name}: {stdout} {stderr}");
        assert!(
            stderr.contains(mention),
            "{name}: stderr should mention {mention:?}: {stderr}"
        );
    }
    let (status, _, stderr) = check(&dir.path().join("missing.toml"));
    assert_eq!(status.code(), Some(64), "a missing file: {stderr}");
}
