#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine with the Rust toolchain:
# formatting, clippy (warnings are errors), then the whole test suite (unit tests, the
# integration suite against the real server and the real binary), the JavaScript SDK
# tests in Node against the built binary (tests/sdk), the browser tests in headless Debian
# Chromium driven by playwright-core (tests/browser), then the packaging tests
# (tests/packaging.sh: static release build, install.sh, .deb installed and serving a push,
# .rpm contents), then the side-by-side benchmark with soketi, mosquitto and nats-server at
# a small size (benches/run-peers.sh --smoke), and the CPU-floor benchmark at a small size
# (benches/run-floor.sh --smoke). Builds the debug profile once; the packaging
# step builds the release.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# Test output is also kept here, to print one total at the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

step "build tests once"
cargo test --all-targets --locked --no-run

step "run the test suite"
cargo test --all-targets --locked 2>&1 | tee -a "$log"

step "JavaScript SDK tests (Node 20+, against the binary built above)"
if ! command -v npm >/dev/null 2>&1; then
  # Debian's Node.js and npm, when the machine has none.
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
(
  cd tests/sdk
  npm ci --no-audit --no-fund
  WARBLER_BIN="$target_dir/debug/warbler" node --test --test-concurrency=1
) 2>&1 | tee -a "$log"

step "browser tests (headless Debian Chromium through playwright-core, tests/browser)"
if [ ! -e /usr/bin/chromium ]; then
  # Debian's Chromium; playwright-core downloads no browser of its own.
  apt-get update -qq && apt-get install -y -qq chromium
fi
(
  cd tests/browser
  npm ci --no-audit --no-fund
  WARBLER_BIN="$target_dir/debug/warbler" node --test --test-concurrency=1
) 2>&1 | tee -a "$log"

step "packaging tests (tests/packaging.sh)"
bash tests/packaging.sh 2>&1 | tee -a "$log"

step "peers side by side, smoke size (benches/run-peers.sh --smoke)"
# Installs soketi, mosquitto and nats-server (pinned; under target/peers/, mosquitto from
# apt), builds their load client, and runs both shapes once at a small size against the
# release binary the packaging step built: ~2.5 min on a fresh 2-core machine.
SKIP_BUILD=1 BIN="$target_dir/x86_64-unknown-linux-gnu/release/warbler" \
  bash benches/run-peers.sh --smoke

step "one push per request against its CPU floors, smoke size (benches/run-floor.sh --smoke)"
# Installs h2load (Debian's nghttp2-client) when missing; ~30 s against the release binary.
SKIP_BUILD=1 BIN="$target_dir/x86_64-unknown-linux-gnu/release/warbler" \
  bash benches/run-floor.sh --smoke

step "peers load client: fmt and unit tests (benches/peers, a crate of its own)"
cargo fmt --manifest-path benches/peers/Cargo.toml -- --check
CARGO_TARGET_DIR=target/peers/cargo-target \
  cargo test --release --locked --manifest-path benches/peers/Cargo.toml 2>&1 | tee -a "$log"

step "total"
rust_passed=$(grep -hoE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
rust_failed=$(grep -hoE '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
node_passed=$(grep -hE '^# pass [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')
node_failed=$(grep -hE '^# fail [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')
echo "$((rust_passed + node_passed)) passed, $((rust_failed + node_failed)) failed"
