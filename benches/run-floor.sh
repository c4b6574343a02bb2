#!/usr/bin/env bash
# What one push per request costs on this machine, next to its two floors, measured with an
# outside load generator (h2load, from Debian's nghttp2-client) so that no figure depends on
# `warbler bench`'s own client:
#   - request floor: GET /healthz flat out (no store, no device), over HTTP/2 (one thread,
#     8 connections × 32 streams) and HTTP/1.1 (64 connections, one request in flight each);
#   - the whole push: POST /v1/messages flat out, one push per request, to one device held
#     online by `warbler listen` (which receives and acks every message), same two shapes;
#   - store-and-delivery floor: `warbler bench unicast --batch 20` flat out (64 devices, 64
#     clients, 20 pushes per request, so each push carries a twentieth of a request).
# Each figure: requests (or pushes) per second, and CPU µs per request of the server, of the
# load generator and, for pushes, of the listening device (utime + stime). RUNS (5) runs of
# DURATION (5) s, a fresh server per shape; prints medians, then the CPU per push that
# TARGET (50,000) pushes/s leaves on this machine's cores, for everything on it.
#
# Usage: benches/run-floor.sh [--smoke]   (--smoke: RUNS=1 DURATION=1, proves it works)
# Knobs (environment): RUNS DURATION TARGET SKIP_BUILD=1 SKIP_INSTALL=1 KEEP=1 OUT=dir.
# Every run is bounded in time (timeout) and every loop in count.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

if [[ ${1:-} == --smoke ]]; then
    RUNS=${RUNS:-1} DURATION=${DURATION:-1}
elif [[ -n ${1:-} ]]; then
    echo "usage: benches/run-floor.sh [--smoke]" >&2
    exit 2
fi
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
TARGET=${TARGET:-50000}
OUT=${OUT:-target/bench/floor-$(date +%Y%m%d-%H%M%S)}

if ! command -v h2load >/dev/null 2>&1; then
    if [[ ${SKIP_INSTALL:-0} == 1 ]]; then
        echo "bench: h2load is missing (Debian package nghttp2-client)" >&2
        exit 1
    fi
    echo "bench: installing h2load (apt-get install nghttp2-client)" >&2
    sudo=()
    [[ $(id -u) != 0 ]] && sudo=(sudo)
    timeout 600 "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -qq nghttp2-client >/dev/null
fi

mkdir -p "$OUT"
LISTENER=""
cleanup() {
    [[ -n $LISTENER ]] && kill "$LISTENER" 2>/dev/null
    stop_server
}
trap cleanup EXIT
trap "exit 130" INT TERM
build_release
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "h2load: $(h2load --version 2>&1 | head -1)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2
echo "bench: results in $OUT" >&2

ticks() { # utime + stime of a process, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}
TCK=$(getconf CLK_TCK)

# h2load_run NAME I LISTENER_PID H2LOAD_ARGS...: one h2load run against the current
# server; writes $OUT/NAME-I.json.
h2load_run() {
    local name=$1 i=$2 lp=$3
    shift 3
    local s0 s1 l0=0 l1=0 gen
    s0=$(ticks "$SERVER_PID")
    [[ -n $lp ]] && l0=$(ticks "$lp")
    echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg) $name run $i" >>"$OUT/loadavg.log"
    # bash's `time` gives the generator's own user + system CPU.
    gen=$( { TIMEFORMAT='%3U %3S'; time timeout $((DURATION + 60)) h2load -t 1 -D "$DURATION" \
        "$@" >"$OUT/$name-$i.txt" 2>&1; } 2>&1 | tail -1)
    s1=$(ticks "$SERVER_PID")
    [[ -n $lp ]] && l1=$(ticks "$lp")
    python3 - "$OUT/$name-$i.txt" "$((s1 - s0))" "$((l1 - l0))" "$gen" "$TCK" "$DURATION" >"$OUT/$name-$i.json" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
server, listener, tck, duration = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5]), float(sys.argv[6])
user, system = (float(x) for x in sys.argv[4].split())
m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
if not m or not codes:
    sys.exit("bench: h2load printed no totals:\n" + text)
ok = int(codes.group(1))
bad = int(m.group(3)) + int(m.group(4)) + sum(int(codes.group(k)) for k in (2, 3, 4))
us = lambda seconds: round(seconds * 1e6 / ok, 2) if ok else None
print(json.dumps({
    "ok": ok, "errors": bad, "per_s": round(ok / duration, 1),
    "server_us": us(server / tck), "generator_us": us(user + system),
    "listener_us": us(listener / tck) if listener else None,
}))
EOF
}

healthz() { # healthz NAME H2LOAD_ARGS...: the request floor, RUNS times on one server
    local name=$1
    shift
    start_server
    local i
    for i in $(seq 1 "$RUNS"); do
        echo "bench: $name, run $i/$RUNS" >&2
        h2load_run "$name" "$i" "" "$@" "$SERVER_URL/healthz"
    done
    stop_server
}

# pushes NAME H2LOAD_ARGS...: one push per request to one online device, RUNS times on one
# server. The device is `warbler listen`, registered with the app's client key; every
# message it prints is counted, and the run waits (bounded) until all pushes arrived.
pushes() {
    local name=$1
    shift
    start_server
    local data=$SERVER_DIR/data
    local api_key device
    api_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' \
        "$data/initial-credentials.json")
    "$BIN" listen --url "$SERVER_URL" --data-dir "$data" --json >"$SERVER_DIR/listen.out" \
        2>"$SERVER_DIR/listen.err" &
    LISTENER=$!
    local _
    for _ in $(seq 1 100); do # up to 10 s
        grep -q '"registered"' "$SERVER_DIR/listen.out" 2>/dev/null && grep -q "connected" "$SERVER_DIR/listen.err" && break
        sleep 0.1
    done
    device=$(sed -n 's/.*"device_id":"\(dev_[a-z0-9]*\)".*/\1/p' "$SERVER_DIR/listen.out" | head -1)
    if [[ -z $device ]]; then
        echo "bench: warbler listen did not register a device" >&2
        cat "$SERVER_DIR/listen.err" >&2
        return 1
    fi
    printf '{"to":{"device":"%s"},"data":{"n":1}}' "$device" >"$SERVER_DIR/body.json"
    local i sent=0 got
    for i in $(seq 1 "$RUNS"); do
        echo "bench: $name, run $i/$RUNS" >&2
        h2load_run "$name" "$i" "$LISTENER" -d "$SERVER_DIR/body.json" \
            -H "authorization: Bearer $api_key" -H "content-type: application/json" \
            "$@" "$SERVER_URL/v1/messages"
        sent=$((sent + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$OUT/$name-$i.json")))
        for _ in $(seq 1 300); do # up to 30 s for the device to catch up
            got=$(grep -c '"type":"message"' "$SERVER_DIR/listen.out" || true)
            ((got >= sent)) && break
            sleep 0.1
        done
        if ((got < sent)); then
            echo "bench: $name: the device received $got of $sent accepted pushes" >&2
            return 1
        fi
    done
    kill "$LISTENER" 2>/dev/null
    wait "$LISTENER" 2>/dev/null || true
    LISTENER=""
    stop_server
}

healthz healthz-h2 -c 8 -m 32
healthz healthz-h1 --h1 -c 64 -m 1
pushes push-h2 -c 8 -m 32
pushes push-h1 --h1 -c 64 -m 1

start_server
for i in $(seq 1 "$RUNS"); do
    echo "bench: unicast in batches of 20, run $i/$RUNS" >&2
    bench $((DURATION + 180)) --json -q unicast --devices 64 --clients 64 \
        --duration "$DURATION" --batch 20 >"$OUT/batch-$i.json"
done
stop_server

python3 - "$OUT" "$TARGET" "$(nproc)" <<'EOF' | tee "$OUT/summary.txt"
import json, pathlib, statistics, sys
out, target, cores = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def runs(prefix):
    return [json.loads(p.read_text()) for p in sorted(out.glob(prefix + "-*.json"))]
def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None
def fmt(v, unit=""):
    return "-" if v is None else (f"{v:,.0f}{unit}" if v >= 1000 else f"{v:.1f}{unit}")
summary = {}
print(f"{'shape':<44} {'per s':>9} {'server µs':>10} {'generator µs':>13} {'device µs':>10} {'errors':>7}")
rows = [
    ("healthz-h2", "GET /healthz, HTTP/2, 8 conns × 32 streams"),
    ("healthz-h1", "GET /healthz, HTTP/1.1, 64 conns"),
    ("push-h2", "one push per request, HTTP/2, 8 × 32"),
    ("push-h1", "one push per request, HTTP/1.1, 64 conns"),
]
for key, label in rows:
    rs = runs(key)
    row = {k: med(rs, k) for k in ("per_s", "server_us", "generator_us", "listener_us")}
    row["errors"] = sum(r["errors"] for r in rs)
    summary[key] = row
    print(f"{label:<44} {fmt(row['per_s']):>9} {fmt(row['server_us']):>10} "
          f"{fmt(row['generator_us']):>13} {fmt(row['listener_us']):>10} {row['errors']:>7}")
batch = runs("batch")
b = {
    "per_s": med(batch, "accepted_per_s"),
    "server_us": med(batch, "server_cpu_us_per_push"),
    "writer_us": med(batch, "writer_cpu_us_per_push"),
    "errors": sum(r.get("errors", 0) for r in batch),
}
summary["batch20"] = b
print(f"{'20 pushes per request (warbler bench), per push':<44} {fmt(b['per_s']):>9} "
      f"{fmt(b['server_us']):>10} {'-':>13} {'-':>10} {b['errors']:>7}")
budget = cores * 1e6 / target
summary["budget_us"] = budget
h2, p2 = summary["healthz-h2"], summary["push-h2"]
print()
print(f"{target:,} pushes/s on {cores} cores leave {budget:.1f} µs of CPU per push for everything.")
if None not in (h2["server_us"], b["server_us"], p2["server_us"]):
    floor = h2["server_us"] + b["server_us"]
    summary["server_floor_us"] = floor
    print(f"Server floors: an HTTP/2 request with no work {h2['server_us']:.1f} µs + a push's store and "
          f"delivery (batches of 20) {b['server_us']:.1f} µs = {floor:.1f} µs; "
          f"one push per request measured {p2['server_us']:.1f} µs.")
    clients = (p2["generator_us"] or 0) + (p2["listener_us"] or 0)
    whole = p2["server_us"] + clients
    print(f"One push per request over HTTP/2, whole: server {p2['server_us']:.1f} + generator "
          f"{p2['generator_us'] or 0:.1f} + device {p2['listener_us'] or 0:.1f} = {whole:.1f} µs, "
          f"i.e. at most {cores * 1e6 / whole:,.0f} pushes/s with all of it on this machine.")
(out / "summary.json").write_text(json.dumps(summary, indent=2))
EOF
