#!/usr/bin/env bash
# Soak: durable pushes at RATE (5,000/s) for DURATION seconds (1,800) to 64 connected,
# acking devices, on one server; the server's RSS sampled every 10 s. Reports errors,
# undelivered pushes, latency, and RSS drift from the end of the warm-up (WARM_S, 300 s:
# the store's page cache, storage.cache_mib = CACHE_MIB, fills first) to the end.
#
# Knobs (environment): RATE DURATION WARM_S CACHE_MIB SKIP_BUILD=1 KEEP=1 OUT=dir.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

RATE=${RATE:-5000}
DURATION=${DURATION:-1800}
WARM_S=${WARM_S:-300}
OUT=${OUT:-target/bench/soak-$(date +%Y%m%d-%H%M%S)}

mkdir -p "$OUT"
# The sampler has usually been stopped already; a failing kill must not become the exit code.
trap 'stop_server; if [[ -n ${SAMPLER:-} ]]; then kill "$SAMPLER" 2>/dev/null || true; fi' EXIT
trap "exit 130" INT TERM
build_release
echo "bench: results in $OUT" >&2
start_server
(
    start=$(date +%s)
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        now=$(date +%s)
        (( now - start > DURATION + 600 )) && break
        echo "$((now - start)) $(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$SERVER_PID/status")" >>"$OUT/rss.log"
        sleep 10
    done
) &
SAMPLER=$!
echo "bench: soak at $RATE/s for $DURATION s" >&2
bench $((DURATION + 300)) --json unicast --rate "$RATE" --duration "$DURATION" --warmup 5 >"$OUT/soak.json"
kill "$SAMPLER" 2>/dev/null || true
du -sh "$SERVER_DIR/data" >"$OUT/data-size.txt"

python3 - "$OUT" "$WARM_S" <<'EOF' | tee "$OUT/summary.txt"
import json, sys, pathlib
out, warm = pathlib.Path(sys.argv[1]), int(sys.argv[2])
r = json.loads((out / "soak.json").read_text())
rss = [tuple(map(int, l.split())) for l in (out / "rss.log").read_text().splitlines() if len(l.split()) == 2]
after = [kib for t, kib in rss if t >= warm]
base = after[0] if after else None
end = after[-1] if after else None
peak = max(after) if after else None
drift = (end - base) / base * 100 if base else None
print(f"soak: {r['accepted']:,} pushes at {r['target_rate']:.0f}/s over {r['duration_s']:.0f} s, "
      f"errors {r['errors']}, undelivered {r['missing']}, data dir {(out / 'data-size.txt').read_text().split()[0]}")
print(f"  end to end p50 {r['e2e_latency']['p50_ms']} ms, p99 {r['e2e_latency']['p99_ms']} ms, "
      f"p999 {r['e2e_latency']['p999_ms']} ms" if 'e2e_latency' in r else "  (no end-to-end latency in the report)")
secs = r.get("e2e_by_second") or []
if secs:
    # Share of deliveries over 3 ms in the seconds the host stole CPU from this VM and in
    # the seconds it did not: a shared host's pauses are not the server's latency.
    def over(xs):
        n = sum(x["count"] for x in xs)
        return f"{len(xs)} s, {100 * sum(x['over_3ms'] for x in xs) / n:.2f} % over 3 ms" if n else f"{len(xs)} s"
    stolen = [x for x in secs if (x.get("steal_pct") or 0) > 0]
    calm = [x for x in secs if x.get("steal_pct") == 0]
    print(f"  CPU stolen by the host {r.get('machine_steal_pct')} %; seconds with steal: {over(stolen)}; "
          f"without: {over(calm)}")
if base:
    print(f"  server RSS at {warm} s {base:,} KiB, peak after {peak:,} KiB, at the end {end:,} KiB: "
          f"drift {drift:+.1f} % (first sample {rss[0][1]:,} KiB)")
(out / "summary.json").write_text(json.dumps({"accepted": r["accepted"], "errors": r["errors"], "missing": r["missing"],
    "rss_warm_kib": base, "rss_end_kib": end, "rss_peak_kib": peak, "drift_pct": drift}, indent=2) + "\n")
EOF
