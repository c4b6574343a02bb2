//! The real binary's tools for installers and containers: `config print-default`,
//! `health`, and SIGHUP (`systemctl reload`) leaving the server running.

use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{wait_for_exit, BinaryServer};

fn warbler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warbler"))
        .args(args)
        .env("WARBLER_LOG", "warn")
        .output()
        .expect("run warbler")
}

fn health(server: &BinaryServer) -> Output {
    let data = server.data.to_str().expect("utf-8 path");
    warbler(&[
        "health",
        "--url",
        &server.url,
        "--data",
        data,
        "--timeout",
        "5",
    ])
}

#[test]
fn print_default_prints_the_commented_default_that_config_check_accepts() {
    let out = warbler(&["config", "print-default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text, warbler::config::DEFAULT_CONFIG_TOML);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warbler.toml");
    std::fs::write(&path, &text).expect("write");
    let check = warbler(&["config", "check", path.to_str().expect("utf-8 path")]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
}

#[tokio::test]
async fn health_says_ready_while_serving_survives_sighup_and_fails_once_stopped() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = BinaryServer::start(data.path());
    let ok = health(&server);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ready"));

    let pid = server.child.id().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status();
    assert!(hup.expect("run kill").success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "SIGHUP stopped it"
    );
    assert_eq!(health(&server).status.code(), Some(0), "ready after SIGHUP");

    server.sigterm();
    let status = wait_for_exit(&mut server.child, Duration::from_secs(20)).expect("exits");
    assert!(status.success());
    let down = health(&server);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
}
