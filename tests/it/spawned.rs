//! The real `warbler` binary started with any arguments and environment, its stdout and
//! stderr collected as they arrive (to check what it logged), killed when dropped.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running (or exited) `warbler` process and everything it printed so far.
pub struct Spawned {
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let into = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .expect("log buffer")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

impl Spawned {
    /// Starts `warbler ARGS…` with `env` added to (and `WARBLER_LOG` removed from) the
    /// inherited environment.
    pub fn start<I, S>(args: I, env: &[(&str, &str)]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warbler"));
        cmd.args(args)
            .env_remove("WARBLER_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn warbler");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout buffer").clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// The base URL from the "listening on" line, waiting up to `within` for it.
    pub fn url(&mut self, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(url) = self
                .stdout()
                .lines()
                .find_map(|l| l.strip_prefix("listening on "))
            {
                return url.to_owned();
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "warbler exited ({status}) before listening:\n{}",
                    self.stderr()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "warbler printed no address within {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `within` for stderr to contain `needle` `times` times.
    pub async fn wait_stderr(&self, needle: &str, times: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.stderr().matches(needle).count() < times {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stderr never held {needle:?} {times} times within {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        crate::harness::wait_for_exit(&mut self.child, within)
            .unwrap_or_else(|| panic!("warbler still running after {within:?}"))
    }

    /// SIGTERM, then the exit status (within 15 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        self.wait_exit(Duration::from_secs(15))
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -HUP {pid}");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
