#!/usr/bin/env bash
# Warbler and its peers side by side on loopback, same workload shapes, medians and ratios:
#   - idle connections: CONNS (10,000) connections held HOLD (10) s; the server's RSS per
#     connection = (VmRSS after the hold − before connecting) ÷ connected;
#   - 1 → N fan-out: FAN_DEVICES (1,000) subscribers on one topic, FAN_BROADCASTS (1,000)
#     broadcasts flat out; deliveries/s and publish → receive p50/p99. A run lasts ~1 s for
#     Warbler and ~10 s for soketi: 200 broadcasts (the default until the nineteenth
#     session) gave Warbler a 0.2 s window, mostly start-up, in which server and load
#     generator spent ~30 % more CPU per delivery than over 1,000 (docs/benchmarks.md).
# Warbler runs over TLS and, as `warbler_plain`, without it (tls.mode = "off"; WARBLER_PLAIN=0
# skips that), every delivery acked and the ack stored durably (durability immediate);
# soketi, mosquitto and nats-server run over plain TCP (benches/peers/: install.sh, lib.sh, the `peers-bench` load client).
# Every system gets a freshly started server for every run; RUNS (5) rounds, each round
# running every system once, so load from other work on the box spreads over all of them.
#
# Usage: benches/run-peers.sh [--smoke]
#   --smoke: RUNS=1 CONNS=200 HOLD=2 FAN_DEVICES=200 FAN_BROADCASTS=20 (proves it works).
# Knobs (environment): RUNS CONNS HOLD FAN_DEVICES FAN_BROADCASTS SENDERS (64) PEERS
# ("soketi mosquitto nats") MQTT_QOS ("1 0": mosquitto fan-out at each) SKIP_BUILD=1
# SKIP_INSTALL=1 KEEP=1 SERVER_CPUS BENCH_CPUS OUT=dir.
# Every run is bounded in time (timeout) and every loop in count.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
source benches/peers/lib.sh

if [[ ${1:-} == --smoke ]]; then
    RUNS=${RUNS:-1} CONNS=${CONNS:-200} HOLD=${HOLD:-2}
    FAN_DEVICES=${FAN_DEVICES:-200} FAN_BROADCASTS=${FAN_BROADCASTS:-20}
elif [[ -n ${1:-} ]]; then
    echo "usage: benches/run-peers.sh [--smoke]" >&2
    exit 2
fi
RUNS=${RUNS:-5}
CONNS=${CONNS:-10000}
HOLD=${HOLD:-10}
FAN_DEVICES=${FAN_DEVICES:-1000}
FAN_BROADCASTS=${FAN_BROADCASTS:-1000}
SENDERS=${SENDERS:-64}
PEERS=${PEERS:-soketi mosquitto nats}
MQTT_QOS=${MQTT_QOS:-1 0}
OUT=${OUT:-target/bench/peers-$(date +%Y%m%d-%H%M%S)}
PEERS_BIN=$PEERS_DIR/cargo-target/release/peers-bench
if ((CONNS > 15000 || FAN_DEVICES > 15000)); then
    echo "bench: at most 15,000 connections per load process (20,000 open files here)" >&2
    exit 2
fi

mkdir -p "$OUT"
cleanup() {
    stop_server
    stop_peer
}
trap cleanup EXIT
trap "exit 130" INT TERM

if [[ ${SKIP_BUILD:-0} == 1 && -x $BIN ]]; then
    echo "bench: SKIP_BUILD=1, using $BIN" >&2
else
    echo "bench: cargo build --release --locked (a few minutes on a small box)" >&2
    cargo build --release --locked --quiet
fi
[[ ${SKIP_INSTALL:-0} == 1 ]] || benches/peers/install.sh
echo "bench: building the peers' load client" >&2
CARGO_TARGET_DIR=$PEERS_DIR/cargo-target cargo build --release --locked --quiet \
    --manifest-path benches/peers/Cargo.toml

echo "bench: results in $OUT" >&2
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "kernel: $(uname -r)"
    echo "ulimit -n: $(ulimit -n)"
    echo "durability: ${DURABILITY:-immediate}"
    echo "warbler: $BIN (modified $(date -u -r "$BIN" +%FT%TZ))"
    echo "soketi: $(sed -n 's/^  "version": "\(.*\)",/\1/p' "$PEERS_DIR/soketi/node_modules/@soketi/soketi/package.json" 2>/dev/null) (uWebSockets.js $(sed -n 's/^  "version": "\(.*\)",/\1/p' "$PEERS_DIR/soketi/node_modules/uWebSockets.js/package.json" 2>/dev/null)), node $(node --version 2>/dev/null)"
    echo "mosquitto: $(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null)"
    echo "nats-server: $("$PEERS_DIR/nats-venv/bin/nats-server" --version 2>/dev/null)"
    echo "uptime before: $(uptime)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

conn_limit=$((HOLD + 300 + CONNS / 20))
fan_limit=300
FAILED=0 # runs that failed or timed out

fail() { # fail WHAT EXIT: count a failed run and say so
    echo "bench: $1 failed (exit $2)" >&2
    FAILED=$((FAILED + 1))
}

# note NAME: the 1-minute load average just before run NAME.
note() { cut -d' ' -f1 /proc/loadavg >"$OUT/$1.load"; }

ours() { # ours SHAPE RUN [plain]: Warbler over TLS, or without it as warbler_plain
    local shape=$1 i=$2 name=warbler
    [[ ${3:-} == plain ]] && name=warbler_plain
    if [[ $name == warbler_plain ]]; then PLAIN=1 start_server; else PLAIN=0 start_server; fi
    note "$shape-$name-$i"
    if [[ $shape == conn ]]; then
        bench "$conn_limit" --json -q connections -n "$CONNS" --hold "$HOLD" \
            >"$OUT/conn-$name-$i.json" || fail "$name connections run $i" $?
    else
        bench "$fan_limit" --json -q fanout --devices "$FAN_DEVICES" \
            --broadcasts "$FAN_BROADCASTS" --senders "$SENDERS" \
            >"$OUT/fan-$name-$i.json" || fail "$name fanout run $i" $?
    fi
    stop_server
}

peer() { # peer SHAPE RUN KIND [QOS]
    local shape=$1 i=$2 kind=$3 qos=${4:-1} proto name
    proto=$kind
    [[ $kind == mosquitto ]] && proto=mqtt
    name=$kind
    [[ $kind == mosquitto && $shape == fan ]] && name=mosquitto-qos$qos
    start_peer "$kind"
    note "$shape-$name-$i"
    local args=(--peer "$proto" --addr "$PEER_ADDR" --server-pid "$PEER_PID" --qos "$qos" --json -q)
    if [[ $shape == conn ]]; then
        pin "$BENCH_CPUS" timeout --signal=INT --kill-after=10 "$conn_limit" "$PEERS_BIN" "${args[@]}" \
            connections -n "$CONNS" --hold "$HOLD" >"$OUT/conn-$name-$i.json" ||
            fail "$name connections run $i" $?
    else
        pin "$BENCH_CPUS" timeout --signal=INT --kill-after=10 "$fan_limit" "$PEERS_BIN" "${args[@]}" \
            fanout --devices "$FAN_DEVICES" --broadcasts "$FAN_BROADCASTS" --senders "$SENDERS" \
            >"$OUT/fan-$name-$i.json" || fail "$name fanout run $i" $?
    fi
    stop_peer
}

for i in $(seq 1 "$RUNS"); do
    echo "bench: round $i/$RUNS: idle connections ($CONNS)" >&2
    ours conn "$i"
    if [[ ${WARBLER_PLAIN:-1} == 1 ]]; then ours conn "$i" plain; fi
    for kind in $PEERS; do
        peer conn "$i" "$kind"
    done
    echo "bench: round $i/$RUNS: fan-out ($FAN_DEVICES × $FAN_BROADCASTS)" >&2
    ours fan "$i"
    if [[ ${WARBLER_PLAIN:-1} == 1 ]]; then ours fan "$i" plain; fi
    for kind in $PEERS; do
        if [[ $kind == mosquitto ]]; then
            for q in $MQTT_QOS; do peer fan "$i" mosquitto "$q"; done
        else
            peer fan "$i" "$kind"
        fi
    done
done
echo "uptime after: $(uptime)" >>"$OUT/machine.txt"

# The summary exits non-zero when a run lost deliveries or connections.
python3 benches/peers/summary.py "$OUT" | tee "$OUT/summary.txt"
if ((FAILED > 0)); then
    echo "bench: $FAILED run(s) failed" >&2
    exit 1
fi
