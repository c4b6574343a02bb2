//! The `WARBLER_<SECTION>_<KEY>` environment layer, through the real binary: the
//! environment beats the file (also after a reload), a flag beats the environment, and a
//! bad or unknown variable stops the start with exit 64 and its name.

use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use warbler::client::Client;

use crate::spawned::Spawned;

fn serve_args(config: &Path, data: &Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--config".into(),
        config.display().to_string(),
        "--data".into(),
        data.display().to_string(),
    ]
}

/// A push to a topic with a `data` payload of about `bytes` bytes; the status.
async fn push_of(client: &Client, api_key: &str, bytes: usize) -> StatusCode {
    client
        .call(
            Method::POST,
            "/v1/messages",
            Some(api_key),
            Some(&json!({"to": {"topic": "news"}, "data": {"pad": "x".repeat(bytes)}})),
        )
        .await
        .expect("push")
        .status
}

async fn reloads_ok(client: &Client) -> u64 {
    let (_, text) = client.download("/metrics", None).await.expect("metrics");
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("warbler_config_reloads_total{result=\"ok\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_environment_beats_the_file_even_after_a_reload_and_a_flag_beats_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("warbler.toml");
    std::fs::write(&config, "[limits]\nmax_message_bytes = 100\n").expect("config");
    let data = dir.path().join("data");
    let mut server = Spawned::start(
        serve_args(&config, &data),
        &[
            ("WARBLER_LIMITS_MAX_MESSAGE_BYTES", "1000"),
            // Not an address of this machine: the start would fail if it won over --listen.
            ("WARBLER_SERVER_LISTEN", "203.0.113.7:8443"),
        ],
    );
    let url = server.url(Duration::from_secs(30));
    assert!(
        url.starts_with("https://127.0.0.1:"),
        "--listen wins: {url}"
    );
    let log = server.stderr();
    assert!(
        log.contains("WARBLER_LIMITS_MAX_MESSAGE_BYTES") && log.contains("set by the environment"),
        "{log}"
    );

    let creds: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("initial-credentials.json")).expect("credentials"),
    )
    .expect("json");
    let api_key = creds["api_key"].as_str().expect("api key");
    let client = Client::new(&url, &data.join("tls/ca.crt")).expect("client");

    // The file says 100 bytes, the environment 1000: a 500-byte push is accepted, and the
    // environment's limit is a real one.
    assert_eq!(push_of(&client, api_key, 500).await, StatusCode::ACCEPTED);
    assert_eq!(
        push_of(&client, api_key, 1500).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // A reload of a changed file lays the environment over it again.
    std::fs::write(
        &config,
        "[limits]\nmax_message_bytes = 100\nmax_ttl = 86400\ndefault_ttl = 3600\n",
    )
    .expect("config");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reloads_ok(&client).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload within 5 s:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(push_of(&client, api_key, 500).await, StatusCode::ACCEPTED);

    assert_eq!(server.terminate().code(), Some(0));
}

#[tokio::test]
async fn a_bad_or_unknown_variable_stops_the_start_with_exit_64_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("warbler.toml");
    std::fs::write(&config, "[limits]\npushes_per_second = 5\n").expect("config");
    let data = dir.path().join("data");
    for (var, value, says) in [
        (
            "WARBLER_LIMITS_PUSHES_PER_SECOND",
            "fast",
            "\"fast\" is not an integer",
        ),
        (
            "WARBLER_LIMITS_PUSHES_PER_SECONDS",
            "5",
            "not a configuration key",
        ),
        ("WARBLER_STORAGE_DURABILITY", "sometimes", "unknown variant"),
    ] {
        let mut server = Spawned::start(serve_args(&config, &data), &[(var, value)]);
        let status = server.wait_exit(Duration::from_secs(10));
        let err = server.stderr();
        assert_eq!(status.code(), Some(64), "{var}: {err}");
        assert!(err.contains(var) && err.contains(says), "{var}: {err}");

        // `config check` reads the environment too.
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_warbler"))
            .args(["config", "check"])
            .arg(&config)
            .env(var, value)
            .output()
            .expect("config check");
        assert_eq!(check.status.code(), Some(64), "{var}");
        assert!(String::from_utf8_lossy(&check.stderr).contains(var));
    }
    assert!(
        !data.exists(),
        "nothing is created when the start is refused"
    );
}

#[tokio::test]
async fn a_text_log_to_a_pipe_carries_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("warbler.toml");
    std::fs::write(&config, "[log]\nformat = \"text\"\nlevel = \"info\"\n").expect("config");
    let mut server = Spawned::start(serve_args(&config, &dir.path().join("data")), &[]);
    server.url(Duration::from_secs(30));
    assert!(server.terminate().success());
    let log = server.stderr();
    assert!(log.contains("store closed"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log that is no terminal: {log:?}"
    );
    assert!(log.contains(" INFO "), "{log}");
}
