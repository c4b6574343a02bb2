#!/usr/bin/env bash
# Reconnect-storm benchmark of Warbler on loopback, with medians: DEVICES (15,000) offline
# devices with PENDING (10) messages each reconnect at once; time until every message has
# reached its device. RUNS (5) runs, each on a freshly started server (fresh data dir).
#
# Knobs (environment): RUNS DEVICES PENDING CONCURRENCY WARM=1 SKIP_BUILD=1 KEEP=1 SERVER_CPUS
# BENCH_CPUS DURABILITY OUT=dir. Every run is bounded in time (timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

RUNS=${RUNS:-5}
DEVICES=${DEVICES:-15000}
PENDING=${PENDING:-10}
CONCURRENCY=${CONCURRENCY:-512}
OUT=${OUT:-target/bench/storm-$(date +%Y%m%d-%H%M%S)}

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

# WARM=1: every device connects once before its backlog is stored, so the storm resumes
# TLS sessions (devices dropped by a network failure); default: devices never connected.
WARM_ARGS=()
[[ ${WARM:-0} == 1 ]] && WARM_ARGS=(--warm)

for i in $(seq 1 "$RUNS"); do
    start_server
    echo "bench: storm $DEVICES devices × $PENDING pending, run $i/$RUNS" >&2
    cut -d' ' -f1 /proc/loadavg >"$OUT/storm-$i.load"
    bench 900 --json -q storm --devices "$DEVICES" --pending "$PENDING" \
        --concurrency "$CONCURRENCY" "${WARM_ARGS[@]}" >"$OUT/storm-$i.json" ||
        echo "bench: run $i failed or timed out (exit $?)" >&2
    stop_server
done

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
runs, loads = [], []
for p in sorted(out.glob("storm-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
    try:
        runs.append(json.loads(p.read_text()))
        loads.append(p.with_suffix(".load").read_text().strip())
    except (ValueError, OSError):
        pass
print((out / "machine.txt").read_text().strip())
if not runs:
    sys.exit("no run finished")
def med(f):
    vals = [f(r) for r in runs]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None
r0 = runs[0]
summary = {
    "runs": len(runs),
    "storm_s": med(lambda r: r["storm_s"]),
    "connect_s": med(lambda r: r["connect_s"]),
    "deliveries_per_s": med(lambda r: r["deliveries_per_s"]),
    "complete_p50_ms": med(lambda r: r["complete_latency"]["p50_ms"]),
    "complete_p99_ms": med(lambda r: r["complete_latency"]["p99_ms"]),
    "missing_max": max(r["missing"] for r in runs),
    "duplicates_max": max(r["duplicates"] for r in runs),
    "server_cpu_cores": med(lambda r: r.get("server_cpu_cores")),
    "server_cpu_s": med(lambda r: r.get("server_cpu_s")),
    "tls_resumed": med(lambda r: r.get("tls_resumed")),
}
print(f"\nstorm: {r0['devices']} devices × {r0['pending_per_device']} pending reconnect at once: "
      f"medians of {len(runs)} runs")
each = ", ".join(format(r["storm_s"], ".3f") for r in runs)
print(f"  all delivered in {summary['storm_s']:.3f} s (each run: {each}; "
      f"1-min load before each: {', '.join(loads)})")
print(f"  last connect at {summary['connect_s']:.3f} s; per device complete p50 "
      f"{summary['complete_p50_ms']:.0f} ms, p99 {summary['complete_p99_ms']:.0f} ms")
print(f"  {summary['deliveries_per_s']:,.0f} deliveries/s; missing max {summary['missing_max']}, "
      f"duplicates max {summary['duplicates_max']}; server {summary['server_cpu_cores']} cores, "
      f"{summary['server_cpu_s']} CPU-s")
print(f"  TLS sessions resumed by the storm's devices: {summary['tls_resumed']} (median)")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF
