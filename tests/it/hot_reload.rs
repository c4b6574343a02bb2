//! Configuration hot reload: good changes apply within 2 s with no restart and no dropped
//! connection; bad, empty, truncated files are refused whole and counted; editors that save
//! by writing a temp file and renaming it are seen.

use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use warbler::app::App;
use warbler::client::Client;
use warbler::config::Config;

use crate::harness::*;

fn config_text(data: &Path, rate: u32) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[limits]\npushes_per_second = {rate}\n",
        data.display().to_string()
    )
}

async fn start_watching(rate: u32) -> (TestServer, std::path::PathBuf) {
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("warbler.toml");
    std::fs::write(&path, config_text(data.path(), rate)).expect("write config");
    let config = Config::from_file(&path).expect("valid config");
    let mut app = App::build(config).await.expect("server builds");
    app.watch_config(path.clone(), None, Box::new(|_| {}));
    let addr = app.local_addr();
    let creds = app.initial_credentials().cloned().expect("first start");
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run());
    let client =
        Client::new(&format!("https://{addr}"), &data.path().join("tls/ca.crt")).expect("client");
    // Give the watcher a moment to start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (
        TestServer {
            addr,
            data,
            creds,
            client,
            shutdown,
            task,
        },
        path,
    )
}

fn reloads(text: &str, result: &str) -> u64 {
    let series = format!("warbler_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_reloads(s: &TestServer, result: &str, at_least: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (_, text) = s.request_text(Method::GET, "/metrics").await;
        if reloads(&text, result) >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {result} reload within 2 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many of `n` quick pushes are accepted.
async fn accepted_of(s: &TestServer, device: &str, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        if s.push(json!({"device": device}), &format!("p{i}"))
            .await
            .status
            == StatusCode::ACCEPTED
        {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn a_valid_change_applies_live_and_bad_files_are_refused_whole() {
    let (s, path) = start_watching(1000).await;
    let (device, token) = s.register(None).await;
    let mut conn = s.connect(&token).await;
    assert_eq!(accepted_of(&s, &device, 5).await, 5);

    // A good change, saved by writing a temp file and renaming it over the config.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, config_text(s.data.path(), 2)).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    wait_reloads(&s, "ok", 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // refill the bucket at the new rate
    let ok = accepted_of(&s, &device, 6).await;
    assert!(ok <= 3, "the lower limit applies live: {ok} of 6 accepted");

    // The connection opened before the change is still there and still delivers.
    let got = recv_messages(&mut conn, 5, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 5);

    // Bad files: unknown key, empty, truncated. Each is refused and counted; the limit stays.
    let good = config_text(s.data.path(), 1000);
    let cases = [
        format!("{good}[limits]\nbogus = 1\n"),
        String::new(),
        good[..good.len() / 2].to_owned(),
        "[limits]\npushes_per_second = 0\n".to_owned(),
    ];
    for (i, text) in cases.iter().enumerate() {
        std::fs::write(&path, text).expect("write");
        wait_reloads(&s, "error", i as u64 + 1).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ok = accepted_of(&s, &device, 6).await;
    assert!(
        ok <= 3,
        "after refused files the running limit (2/s) stays: {ok} of 6 accepted"
    );

    // Fixing the file applies again.
    std::fs::write(&path, config_text(s.data.path(), 1000)).expect("write");
    wait_reloads(&s, "ok", 2).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(accepted_of(&s, &device, 6).await, 6);
    s.stop().await;
}

#[tokio::test]
async fn settings_that_need_a_restart_keep_their_running_values() {
    let (s, path) = start_watching(1000).await;
    let text = format!(
        "{}[gateway]\nheartbeat_secs = 3\n",
        config_text(s.data.path(), 1000).replace("127.0.0.1:0", "127.0.0.1:1")
    );
    std::fs::write(&path, text).expect("write");
    wait_reloads(&s, "unchanged", 1).await;
    // Still serving on the original port.
    let r = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}
