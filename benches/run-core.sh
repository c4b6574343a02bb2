#!/usr/bin/env bash
# Core benchmarks of Warbler on loopback, with medians:
#   - unicast flat out: 64 devices, 64 API clients, 10 s, RUNS_FLAT (5) times;
#   - unicast at 5,000 pushes/s, same shape, RUNS_RATE (5) times;
#   - unicast flat out through `POST /v1/messages/batch` (BATCH pushes per request, default
#     20), same shape, RUNS_BATCH (5) times;
#   - unicast flat out, one push per request, to OFFLINE_DEVICES (10,000) devices that stay
#     offline (`--offline`: every push is stored for later, none delivered), same clients,
#     RUNS_OFFLINE (5) times on a server of its own, whose store keeps every run's pushes
#     (millions, some GB of disk). Enough devices that no mailbox reaches its cap (1,000)
#     within a run: with 64, each would, and the run would measure the cap's eviction path.
#   - connections: 10,000 idle TLS WebSockets held 10 s, RUNS_CONN (3) times, each against
#     a freshly started server so its RSS is clean.
# The online unicast runs share one server (started once, on a fresh data dir).
#
# Knobs (environment): RUNS_FLAT RUNS_RATE RUNS_BATCH BATCH RUNS_OFFLINE OFFLINE_DEVICES RUNS_CONN DURATION DEVICES CLIENTS RATE CONNS
# HOLD HTTP2=1 API_CONNS SKIP_BUILD=1 KEEP=1 SERVER_CPUS=0 BENCH_CPUS=1 OUT=dir.
# Every run is bounded in time (timeout) and every loop in count.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

RUNS_FLAT=${RUNS_FLAT:-5}
RUNS_RATE=${RUNS_RATE:-5}
RUNS_BATCH=${RUNS_BATCH:-5}
RUNS_OFFLINE=${RUNS_OFFLINE:-5}
OFFLINE_DEVICES=${OFFLINE_DEVICES:-10000}
BATCH=${BATCH:-20}
RUNS_CONN=${RUNS_CONN:-3}
DURATION=${DURATION:-10}
DEVICES=${DEVICES:-64}
CLIENTS=${CLIENTS:-64}
RATE=${RATE:-5000}
CONNS=${CONNS:-10000}
HOLD=${HOLD:-10}
OUT=${OUT:-target/bench/core-$(date +%Y%m%d-%H%M%S)}
EXTRA=()
[[ ${HTTP2:-0} == 1 ]] && EXTRA+=(--http2)
# API_CONNS=N: the unicast clients share N HTTP/2 connections (needs HTTP2=1), as a pooled
# client would; default one connection per client.
UNI=()
[[ -n ${API_CONNS:-} ]] && UNI+=(--connections "$API_CONNS")

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
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

unicast_limit=$((DURATION + 180))
start_server
for i in $(seq 1 "$RUNS_FLAT"); do
    echo "bench: unicast flat out, run $i/$RUNS_FLAT" >&2
    bench "$unicast_limit" --json -q "${EXTRA[@]}" unicast "${UNI[@]}" \
        --devices "$DEVICES" --clients "$CLIENTS" --duration "$DURATION" >"$OUT/flat-$i.json"
done
for i in $(seq 1 "$RUNS_RATE"); do
    echo "bench: unicast at $RATE/s, run $i/$RUNS_RATE" >&2
    bench "$unicast_limit" --json -q "${EXTRA[@]}" unicast "${UNI[@]}" \
        --devices "$DEVICES" --clients "$CLIENTS" --duration "$DURATION" --rate "$RATE" \
        >"$OUT/rate-$i.json"
done
for i in $(seq 1 "$RUNS_BATCH"); do
    echo "bench: unicast flat out in batches of $BATCH, run $i/$RUNS_BATCH" >&2
    bench "$unicast_limit" --json -q "${EXTRA[@]}" unicast "${UNI[@]}" \
        --devices "$DEVICES" --clients "$CLIENTS" --duration "$DURATION" --batch "$BATCH" \
        >"$OUT/batch-$i.json"
done
stop_server

if ((RUNS_OFFLINE > 0)); then
    start_server
    for i in $(seq 1 "$RUNS_OFFLINE"); do
        echo "bench: unicast flat out to offline devices, run $i/$RUNS_OFFLINE" >&2
        bench "$unicast_limit" --json -q "${EXTRA[@]}" unicast "${UNI[@]}" --offline \
            --devices "$OFFLINE_DEVICES" --clients "$CLIENTS" --duration "$DURATION" \
            >"$OUT/offline-$i.json"
    done
    stop_server
fi

conn_limit=$((HOLD + 900))
for i in $(seq 1 "$RUNS_CONN"); do
    echo "bench: connections -n $CONNS, run $i/$RUNS_CONN (fresh server)" >&2
    start_server
    bench "$conn_limit" --json -q connections -n "$CONNS" --hold "$HOLD" >"$OUT/conn-$i.json"
    stop_server
done

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(prefix):
    return [json.loads(p.read_text()) for p in sorted(out.glob(prefix + "-*.json")) if p.stat().st_size]
def med(runs, *path):
    vals = []
    for r in runs:
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None
def fmt(v, unit="", nd=3):
    if v is None:
        return "-"
    return (f"{v:,.0f}" if nd == 0 else f"{v:.{nd}f}") + unit
summary = {}
print((out / "machine.txt").read_text().strip())
for name, title in (("flat", "unicast, flat out"), ("rate", "unicast, fixed rate"),
                    ("batch", "unicast, flat out, batch requests"),
                    ("offline", "unicast, flat out, devices offline (every push stored, none delivered)")):
    runs = load(name)
    if not runs:
        continue
    r0 = runs[0]
    row = {
        "runs": len(runs),
        "accepted_per_s": med(runs, "accepted_per_s"),
        "api_p50_ms": med(runs, "api_latency", "p50_ms"),
        "api_p99_ms": med(runs, "api_latency", "p99_ms"),
        "api_p999_ms": med(runs, "api_latency", "p999_ms"),
        "e2e_p50_ms": med(runs, "e2e_latency", "p50_ms"),
        "e2e_p99_ms": med(runs, "e2e_latency", "p99_ms"),
        "e2e_p999_ms": med(runs, "e2e_latency", "p999_ms"),
        "schedule_lag_p99_ms": med(runs, "schedule_lag", "p99_ms"),
        "rate_held": med(runs, "rate_held"),
        "errors": med(runs, "errors"),
        "missing": med(runs, "missing"),
        "client_cpu_cores": med(runs, "client_cpu_cores"),
        "server_cpu_cores": med(runs, "server_cpu_cores"),
        "server_cpu_us_per_push": med(runs, "server_cpu_us_per_push"),
        "writer_cpu_us_per_push": med(runs, "writer_cpu_us_per_push"),
    }
    summary[name] = row
    rate = f" at {r0['target_rate']:.0f}/s" if r0.get("target_rate") else ""
    if r0.get("batch", 1) > 1:
        rate += f", {r0['batch']} pushes per request"
    print(f"\n{title}{rate}: {r0['devices']} devices, {r0['clients']} clients ({r0['http']}), "
          f"medians of {len(runs)} runs")
    print(f"  accepted/s      {fmt(row['accepted_per_s'], nd=0)}"
          f"   (each run: {', '.join(fmt(r['accepted_per_s'], nd=0) for r in runs)})")
    print(f"  API latency     p50 {fmt(row['api_p50_ms'], ' ms')}  p99 {fmt(row['api_p99_ms'], ' ms')}"
          f"  p999 {fmt(row['api_p999_ms'], ' ms')}")
    if not r0.get("offline"):
        print(f"  end to end      p50 {fmt(row['e2e_p50_ms'], ' ms')}  p99 {fmt(row['e2e_p99_ms'], ' ms')}"
              f"  p999 {fmt(row['e2e_p999_ms'], ' ms')}"
              f"   (p99 each run: {', '.join(fmt(r['e2e_latency']['p99_ms']) for r in runs)})")
    if row["schedule_lag_p99_ms"] is not None:
        short = [i + 1 for i, r in enumerate(runs) if (r.get("rate_held") or 1) < 0.95]
        print(f"  schedule lag    p99 {fmt(row['schedule_lag_p99_ms'], ' ms')}"
              + (f"   runs that fell behind the rate (<95 %): {short}" if short else ""))
    print(f"  errors {fmt(row['errors'], nd=0)}, missing {fmt(row['missing'], nd=0)}, "
          f"CPU client {fmt(row['client_cpu_cores'], nd=2)} + server {fmt(row['server_cpu_cores'], nd=2)} cores")
    print(f"  server CPU      {fmt(row['server_cpu_us_per_push'], ' µs', 1)} per push, of it the store writer "
          f"{fmt(row['writer_cpu_us_per_push'], ' µs', 1)}   (each run: "
          f"{', '.join(fmt(r.get('server_cpu_us_per_push'), '', 1) for r in runs)})")
runs = load("conn")
if runs:
    row = {
        "runs": len(runs),
        "connected": med(runs, "connected"),
        "failed": med(runs, "failed"),
        "connects_per_s": med(runs, "connects_per_s"),
        "server_rss_per_connection_kib": med(runs, "server_rss_per_connection_kib"),
        "server_rss_before_kib": med(runs, "server_rss_before_kib"),
        "server_rss_after_hold_kib": med(runs, "server_rss_after_hold_kib"),
        "client_rss_per_connection_kib": med(runs, "client_rss_per_connection_kib"),
        "dropped": med(runs, "dropped"),
    }
    summary["connections"] = row
    print(f"\nconnections: {runs[0]['requested']} idle TLS WebSockets, medians of {len(runs)} runs (fresh server each)")
    print(f"  connected       {fmt(row['connected'], nd=0)} (failed {fmt(row['failed'], nd=0)}, "
          f"dropped {fmt(row['dropped'], nd=0)}), {fmt(row['connects_per_s'], '/s', 0)}")
    print(f"  server RSS      {fmt(row['server_rss_per_connection_kib'], ' KiB', 2)} per connection"
          f"   (each run: {', '.join(fmt(r['server_rss_per_connection_kib'], '', 2) for r in runs)}; "
          f"before {fmt(row['server_rss_before_kib'], ' KiB', 0)}, after hold {fmt(row['server_rss_after_hold_kib'], ' KiB', 0)})")
load = out / "loadavg.log"
if load.exists():
    avgs = [float(l.split()[1]) for l in load.read_text().splitlines() if l.strip()]
    if avgs:
        print(f"\n1-min load average before runs: min {min(avgs):.2f}, median {statistics.median(avgs):.2f}, max {max(avgs):.2f} (nproc {__import__('os').cpu_count()})")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF
