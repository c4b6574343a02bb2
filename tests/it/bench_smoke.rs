//! Every `warbler bench` scenario once, at a small size, against the real binary: the load
//! generators work and their reports add up (nothing missing, nothing duplicated). The
//! full-size runs are scripts under `benches/`, not tests.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::BinaryServer;
use crate::spawned::Spawned;

fn bench(server: &BinaryServer, scenario: &[&str]) -> Value {
    let data = server.data.to_str().expect("utf-8 path");
    bench_at(&server.url, data, server.child.id(), scenario)
}

fn bench_at(url: &str, data: &str, pid: u32, scenario: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut args = vec![
        "bench",
        "--url",
        url,
        "--data",
        data,
        "--server-pid",
        &pid,
        "--json",
        "-q",
    ];
    args.extend_from_slice(scenario);
    let out = Command::new(env!("CARGO_BIN_EXE_warbler"))
        .args(&args)
        .env("WARBLER_LOG", "warn")
        .output()
        .expect("run warbler bench");
    assert!(
        out.status.success(),
        "bench {scenario:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

/// A one-second `unicast` run (8 devices, 2 clients) with `extra` options.
fn short_unicast<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "unicast",
        "-d",
        "8",
        "-k",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test]
async fn every_bench_scenario_runs_at_a_small_size_and_its_counts_add_up() {
    let data = tempfile::tempdir().expect("tempdir");
    // As the benchmark scripts do: the flat-out batch run measures the server, not the
    // app's default rate limit (1,000 pushes/s), which a fast machine passes.
    let (mut server, _) = BinaryServer::start_with(
        data.path(),
        &[("WARBLER_LIMITS_PUSHES_PER_SECOND", "1000000000")],
    );

    let u = bench(
        &server,
        &[
            "unicast",
            "-d",
            "8",
            "-k",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--rate",
            "200",
        ],
    );
    assert_eq!(u["scenario"], "unicast", "{u}");
    assert!(u["accepted"].as_u64().expect("accepted") > 50, "{u}");
    assert_eq!(u["errors"], 0, "{u}");
    // The server's CPU per push, and the store writer's share of it, from /proc.
    let server_us = u["server_cpu_us_per_push"].as_f64().expect("server µs");
    let writer_us = u["writer_cpu_us_per_push"].as_f64().expect("writer µs");
    assert!(server_us > 0.0 && writer_us <= server_us, "{u}");
    // The by-second series holds the same deliveries as the whole-run percentiles.
    let seconds = u["e2e_by_second"].as_array().expect("e2e_by_second");
    let by_second: u64 = seconds.iter().filter_map(|s| s["count"].as_u64()).sum();
    assert!(!seconds.is_empty(), "{u}");
    assert_eq!(Some(by_second), u["e2e_latency"]["count"].as_u64(), "{u}");
    // The host's stolen CPU over the window, from /proc/stat: a share of the machine.
    let steal = u["machine_steal_pct"].as_f64().expect("machine_steal_pct");
    assert!((0.0..=100.0).contains(&steal), "{u}");

    // The same through the batch endpoint: 20 pushes per request, every one delivered.
    let b = bench(&server, &short_unicast(&["--batch", "20"]));
    assert_eq!(b["batch"], 20, "{b}");
    assert!(b["accepted"].as_u64().expect("accepted") >= 20, "{b}");
    assert_eq!(b["errors"], 0, "{b}");
    assert_eq!(b["missing"], 0, "{b}");

    // `--offline`: the devices never connect, so every accepted push waits in a mailbox and
    // none is delivered.
    let o = bench(&server, &short_unicast(&["--offline"]));
    assert_eq!(o["offline"], true, "{o}");
    assert!(o["accepted"].as_u64().expect("accepted") >= 20, "{o}");
    assert_eq!(o["errors"], 0, "{o}");
    assert_eq!(o["delivered_total"], 0, "{o}");
    assert_eq!(o["e2e_latency"]["count"], 0, "{o}");
    assert_eq!(o["e2e_by_second"], serde_json::json!([]), "{o}");

    let c = bench(&server, &["connections", "-n", "100", "--hold", "0.5"]);
    assert_eq!(c["connected"], 100, "{c}");
    assert!(c["server_rss_per_connection_kib"].as_f64().is_some(), "{c}");

    let f = bench(
        &server,
        &["fanout", "-d", "60", "-m", "20", "--senders", "4"],
    );
    assert_eq!(f["connected"], 60, "{f}");
    assert_eq!(f["expected"], 60 * 20, "{f}");
    assert_eq!(f["missing"], 0, "{f}");
    assert_eq!(f["duplicates"], 0, "{f}");
    // The host's stolen CPU is reported (null only if the run was shorter than a tick).
    assert!(f.get("machine_steal_pct").is_some(), "{f}");

    let s = bench(
        &server,
        &["storm", "-d", "120", "-p", "4", "--clients", "4"],
    );
    assert_eq!(s["complete"], 120, "{s}");
    assert_eq!(s["expected"], 120 * 4, "{s}");
    assert_eq!(s["missing"], 0, "{s}");
    assert!(s["storm_s"].as_f64().expect("storm_s") > 0.0, "{s}");
    // Devices that never connected do full handshakes, never another device's session.
    assert_eq!(s["tls_resumed"], 0, "{s}");
    assert!(s.get("machine_steal_pct").is_some(), "{s}");

    // `--warm`: each device connected once before, and resumes with its own ticket.
    let w = bench(
        &server,
        &["storm", "-d", "60", "-p", "3", "--clients", "4", "--warm"],
    );
    assert_eq!(w["complete"], 60, "{w}");
    assert_eq!(w["missing"], 0, "{w}");
    assert_eq!(w["tls_resumed"], 60, "{w}");
    assert!(w["warm_s"].as_f64().expect("warm_s") > 0.0, "{w}");

    let status = server.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}

/// Against a server without TLS (`tls.mode = "off"`, `--insecure-plaintext`): the load
/// generator speaks plain HTTP and WebSocket to an `http://` URL, for runs on the same
/// footing as peers measured without TLS.
#[tokio::test]
async fn the_bench_also_drives_a_plaintext_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("warbler.toml");
    std::fs::write(&config, "[tls]\nmode = \"off\"\n").expect("write config");
    let data = dir.path().join("data");
    let mut server = Spawned::start(
        [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-plaintext",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--data",
            data.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let url = server.url(Duration::from_secs(20));
    assert!(url.starts_with("http://"), "{url}");
    let data = data.to_str().expect("utf-8 path");
    let pid = server.child.id();
    let c = bench_at(
        &url,
        data,
        pid,
        &["connections", "-n", "50", "--hold", "0.3"],
    );
    assert_eq!(c["connected"], 50, "{c}");
    let f = bench_at(
        &url,
        data,
        pid,
        &["fanout", "-d", "40", "-m", "10", "--senders", "2"],
    );
    assert_eq!(f["expected"], 40 * 10, "{f}");
    assert_eq!(f["missing"], 0, "{f}");
    assert!(server.terminate().success());
}
