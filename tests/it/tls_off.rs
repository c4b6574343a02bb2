//! `tls.mode = "off"`: the real binary refuses it without `--insecure-plaintext` (exit 64,
//! saying why); with the flag it serves plain HTTP/1.1, warns loudly at start and on every
//! reload, shows `warbler_tls_enabled 0`, and a reload cannot switch TLS back on.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spawned::Spawned;

const WARNING: &str = "TLS IS OFF";

fn write_config(path: &Path, mode: &str) {
    std::fs::write(
        path,
        format!("[tls]\nmode = \"{mode}\"\n[limits]\npushes_per_second = 77\n"),
    )
    .expect("write config");
}

/// One plain-text HTTP/1.1 request on a fresh TCP connection; the whole answer.
async fn plain_get(addr: &str, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("answer within 5 s")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

fn serve_args(config: &Path, data: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--config"]
        .iter()
        .map(ToString::to_string)
        .collect();
    args.push(config.display().to_string());
    args.push("--data".into());
    args.push(data.display().to_string());
    args.extend(extra.iter().map(ToString::to_string));
    args
}

#[tokio::test]
async fn tls_off_without_the_flag_is_refused_with_exit_64_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("warbler.toml");
    write_config(&config, "off");
    let data = dir.path().join("data");
    let mut server = Spawned::start(serve_args(&config, &data, &[]), &[]);
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(64), "{}", server.stderr());
    let err = server.stderr();
    assert!(err.contains("tls.mode = \"off\""), "{err}");
    assert!(err.contains("--insecure-plaintext"), "{err}");
    assert!(
        !data.exists(),
        "nothing is created when the start is refused"
    );

    // `config check` accepts the file but says the flag is needed.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_warbler"))
        .args(["config", "check"])
        .arg(&config)
        .output()
        .expect("config check");
    assert!(check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("--insecure-plaintext"), "{err}");
}

#[tokio::test]
async fn tls_off_with_the_flag_serves_plain_http_and_warns_at_start_and_on_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("warbler.toml");
    write_config(&config, "off");
    let data = dir.path().join("data");
    let mut server = Spawned::start(
        serve_args(&config, &data, &["--insecure-plaintext"]),
        &[("WARBLER_LOG", "warn")],
    );
    let url = server.url(Duration::from_secs(20));
    let addr = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("a plain http URL: {url}"))
        .to_owned();
    assert!(server.stderr().contains(WARNING), "{}", server.stderr());
    assert!(server.stderr().contains("WARN"), "{}", server.stderr());

    let health = plain_get(&addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#"{"status":"ok"}"#), "{health}");
    let metrics = plain_get(&addr, "/metrics").await;
    assert!(metrics.contains("\nwarbler_tls_enabled 0\n"), "{metrics}");

    // Every reload repeats the warning; turning TLS on needs a restart and is named.
    let before = server.stderr().matches(WARNING).count();
    server.sighup();
    server
        .wait_stderr(WARNING, before + 1, Duration::from_secs(5))
        .await;
    write_config(&config, "auto");
    server
        .wait_stderr(r#"["tls.mode"]"#, 1, Duration::from_secs(5))
        .await;
    let health = plain_get(&addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "still plain: {health}");

    assert_eq!(server.terminate().code(), Some(0));
}
