#!/usr/bin/env bash
# Fan-out benchmark of Warbler on loopback, with medians:
#   - 1,000 devices × 1,000 broadcasts to `all`, RUNS_SMALL (5) times on one server
#     (~1 s each; 200 broadcasts, the earlier default, measured mostly the start-up regime);
#   - 10,000 devices × 50 broadcasts to `all`, RUNS_LARGE (3) times on another server.
# Each size gets a freshly started server (fresh data dir); the runs of one size share it,
# each registering its own devices (earlier runs' devices are offline by then).
#
# Knobs (environment): RUNS_SMALL RUNS_LARGE SMALL_DEVICES SMALL_BROADCASTS LARGE_DEVICES
# LARGE_BROADCASTS SENDERS RATE (broadcasts/s; default flat out) TOPIC (default `all`)
# SKIP_BUILD=1 KEEP=1 SERVER_CPUS BENCH_CPUS DURABILITY OUT=dir.
# Every run is bounded in time (timeout) and every loop in count.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

RUNS_SMALL=${RUNS_SMALL:-5}
RUNS_LARGE=${RUNS_LARGE:-3}
SMALL_DEVICES=${SMALL_DEVICES:-1000}
SMALL_BROADCASTS=${SMALL_BROADCASTS:-1000}
LARGE_DEVICES=${LARGE_DEVICES:-10000}
LARGE_BROADCASTS=${LARGE_BROADCASTS:-50}
SENDERS=${SENDERS:-64}
OUT=${OUT:-target/bench/fanout-$(date +%Y%m%d-%H%M%S)}
EXTRA=(--senders "$SENDERS")
[[ -n ${RATE:-} ]] && EXTRA+=(--rate "$RATE")
[[ -n ${TOPIC:-} ]] && EXTRA+=(--topic "$TOPIC")

mkdir -p "$OUT"
trap stop_server EXIT
trap "exit 130" INT TERM
build_release

echo "bench: results in $OUT" >&2
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "kernel: $(uname -r)"
    echo "ulimit -n: $(ulimit -n)"
    echo "durability: ${DURABILITY:-immediate}"
    echo "binary: $BIN (modified $(date -u -r "$BIN" +%FT%TZ))"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# size NAME DEVICES BROADCASTS RUNS LIMIT: RUNS runs against one fresh server.
size() {
    local name=$1 devices=$2 broadcasts=$3 runs=$4 limit=$5 i
    start_server
    for i in $(seq 1 "$runs"); do
        echo "bench: fanout $devices devices × $broadcasts broadcasts, run $i/$runs" >&2
        cut -d' ' -f1 /proc/loadavg >"$OUT/$name-$i.load"
        bench "$limit" --json -q fanout "${EXTRA[@]}" \
            --devices "$devices" --broadcasts "$broadcasts" >"$OUT/$name-$i.json" ||
            echo "bench: run $i failed or timed out (exit $?)" >&2
    done
    stop_server
}
size small "$SMALL_DEVICES" "$SMALL_BROADCASTS" "$RUNS_SMALL" 300
size large "$LARGE_DEVICES" "$LARGE_BROADCASTS" "$RUNS_LARGE" 900

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(prefix):
    runs = []
    for p in sorted(out.glob(prefix + "-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        try:
            runs.append(json.loads(p.read_text()))
        except ValueError:
            pass
    return runs
def get(r, path):
    v = r
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) else None
def med(runs, path):
    vals = [v for v in (get(r, path) for r in runs) if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v, nd=3):
    if v is None:
        return "-"
    return f"{v:,.0f}" if nd == 0 else f"{v:,.{nd}f}"
FIELDS = ["deliveries_per_s", "delivery_s", "send_s", "expected", "delivered", "missing",
          "duplicates", "device_disconnects", "latency.p50_ms", "latency.p99_ms",
          "latency.p999_ms", "latency.max_ms", "api_latency.p50_ms", "api_latency.p99_ms",
          "client_cpu_cores", "server_cpu_cores", "server_cpu_us_per_delivery",
          "client_cpu_us_per_delivery", "ack_frames", "connects_per_s", "server_rss_kib"]
summary = {}
print((out / "machine.txt").read_text().strip())
for name in ("small", "large"):
    runs = load(name)
    if not runs:
        continue
    row = {"runs": len(runs)}
    row.update({f: med(runs, f) for f in FIELDS})
    summary[name] = row
    r0 = runs[0]
    mode = f"at {r0['target_rate']:.0f}/s" if r0.get("target_rate") else "flat out"
    print(f"\nfanout {r0['devices']} devices × {r0['broadcasts']} broadcasts to {r0['target']}, "
          f"{mode}, {r0['senders']} senders: medians of {len(runs)} runs")
    each = ", ".join(fmt(r["deliveries_per_s"], 0) for r in runs)
    loads = [p.read_text().strip() for p in
             sorted(out.glob(name + "-*.load"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))]
    print(f"  deliveries/s    {fmt(row['deliveries_per_s'], 0)}   (each run: {each}; "
          f"1-min load before each: {', '.join(loads)})")
    print(f"  delivered       {fmt(row['delivered'], 0)} of {fmt(row['expected'], 0)} in "
          f"{fmt(row['delivery_s'])} s (sends took {fmt(row['send_s'])} s); missing "
          f"{fmt(row['missing'], 0)} (max {max(r['missing'] for r in runs)}), duplicates "
          f"{fmt(row['duplicates'], 0)}, disconnects {fmt(row['device_disconnects'], 0)}")
    print(f"  send → receipt  p50 {fmt(row['latency.p50_ms'])} ms  p99 {fmt(row['latency.p99_ms'])} ms"
          f"  p999 {fmt(row['latency.p999_ms'])} ms  max {fmt(row['latency.max_ms'])} ms")
    print(f"  API latency     p50 {fmt(row['api_latency.p50_ms'])} ms  p99 {fmt(row['api_latency.p99_ms'])} ms")
    print(f"  CPU             client {fmt(row['client_cpu_cores'], 2)} + server "
          f"{fmt(row['server_cpu_cores'], 2)} cores; server {fmt(row['server_cpu_us_per_delivery'], 2)} µs, "
          f"client {fmt(row['client_cpu_us_per_delivery'], 2)} µs per delivery")
    ids = [r["delivered"] / r["ack_frames"] for r in runs if r.get("ack_frames")]
    print(f"  ack frames      {fmt(row['ack_frames'], 0)} (median; "
          f"{fmt(statistics.median(ids) if ids else None, 1)} ids per ack), connects {fmt(row['connects_per_s'], 0)}/s, "
          f"server RSS at end {fmt(row['server_rss_kib'], 0)} KiB")
load_log = out / "loadavg.log"
if load_log.exists():
    avgs = [float(l.split()[1]) for l in load_log.read_text().splitlines() if l.strip()]
    if avgs:
        print(f"\n1-min load average before runs: min {min(avgs):.2f}, median "
              f"{statistics.median(avgs):.2f}, max {max(avgs):.2f} (nproc {__import__('os').cpu_count()})")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF
