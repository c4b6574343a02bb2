#!/usr/bin/env bash
# Restart with a large backlog: DEVICES (2,000) devices × PENDING (500) pending messages =
# 1,000,000 undelivered mailbox entries on disk; then RUNS (5) restarts of the server on that
# data dir, each timed from exec to the first 200 from /readyz (polled every 10 ms).
# (That a backlog survives restarts and is delivered is what tests/it/durability.rs checks.)
#
# Then CRASH_RUNS (3) crashes: pushes at 5,000/s, `kill -9` mid-run, and the same timing of
# the restart, which first applies what the store journal holds past the last checkpoint.
#
# Knobs (environment): RUNS DEVICES PENDING CRASH_RUNS SKIP_BUILD=1 KEEP=1 OUT=dir.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

RUNS=${RUNS:-5}
DEVICES=${DEVICES:-2000}
PENDING=${PENDING:-500}
CRASH_RUNS=${CRASH_RUNS:-3}
OUT=${OUT:-target/bench/restart-$(date +%Y%m%d-%H%M%S)}

mkdir -p "$OUT"
trap stop_server EXIT
trap "exit 130" INT TERM
build_release
echo "bench: results in $OUT" >&2

start_server
echo "bench: loading $DEVICES devices × $PENDING pending" >&2
bench 1800 --json storm --load-only --devices "$DEVICES" --pending "$PENDING" >"$OUT/load.json"

# restart [SIGNAL]: SIGTERM (or SIGNAL), wait, start the same command on the same data dir; sets READY_MS.
# (Not called in a subshell: it updates SERVER_PID.)
restart() {
    kill "-${1:-TERM}" "$SERVER_PID"
    local i
    for i in $(seq 1 600); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    wait "$SERVER_PID" 2>/dev/null || true
    : >"$SERVER_DIR/stdout.log"
    local t0 t1 url=""
    READY_MS=""
    t0=$(date +%s%N)
    "$BIN" serve --config "$SERVER_DIR/config.toml" --data "$SERVER_DIR/data" \
        >"$SERVER_DIR/stdout.log" 2>>"$SERVER_DIR/stderr.log" &
    SERVER_PID=$!
    for i in $(seq 1 6000); do # up to 60 s
        if [[ -z $url ]]; then
            url=$(sed -n 's/^listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$SERVER_DIR/stdout.log")
        fi
        if [[ -n $url ]] && curl -sf --max-time 1 --cacert "$SERVER_DIR/data/tls/ca.crt" \
            "$url/readyz" >/dev/null 2>&1; then
            t1=$(date +%s%N)
            SERVER_URL=$url
            READY_MS=$(((t1 - t0) / 1000000))
            return 0
        fi
        sleep 0.01
    done
    echo "bench: not ready within 60 s" >&2
    return 1
}

du -sh "$SERVER_DIR/data" | tee "$OUT/data-size.txt" >&2
for i in $(seq 1 "$RUNS"); do
    restart
    echo "bench: restart $i/$RUNS ready after $READY_MS ms" >&2
    echo "$READY_MS" >>"$OUT/ready-ms.txt"
done

for i in $(seq 1 "$CRASH_RUNS"); do
    bench 60 --json -q unicast --devices 64 --clients 16 --rate 5000 --duration 6 \
        >/dev/null 2>&1 &
    load_pid=$!
    sleep 4
    : >"$SERVER_DIR/stderr.log"
    restart KILL
    # The generator loses its server mid-run; its outcome is not what is measured here.
    kill -INT "$load_pid" 2>/dev/null || true
    while kill -0 "$load_pid" 2>/dev/null; do sleep 0.1; done
    applied=$(sed -n 's/.*requests=\([0-9]*\).*store journal applied.*/\1/p; s/.*store journal applied.*requests=\([0-9]*\).*/\1/p' \
        "$SERVER_DIR/stderr.log" | head -1)
    echo "bench: crash $i/$CRASH_RUNS ready after $READY_MS ms (${applied:-0} journaled requests applied)" >&2
    echo "$READY_MS ${applied:-0}" >>"$OUT/crash-ready-ms.txt"
done

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
load = json.loads((out / "load.json").read_text())
ms = [int(x) for x in (out / "ready-ms.txt").read_text().split()]
print(f"restart with {load['devices']} devices × {load['pending_per_device']} pending "
      f"= {load['devices'] * load['pending_per_device']:,} undelivered messages "
      f"(data dir {(out / 'data-size.txt').read_text().split()[0]})")
print(f"  ready after {statistics.median(ms)} ms (median of {len(ms)}; each: {', '.join(map(str, ms))})")
summary = {"ready_ms_median": statistics.median(ms), "ready_ms": ms,
    "pending": load["devices"] * load["pending_per_device"]}
crash = out / "crash-ready-ms.txt"
if crash.exists():
    rows = [list(map(int, line.split())) for line in crash.read_text().splitlines() if line.strip()]
    cms = [r[0] for r in rows]
    print(f"  after kill -9 at 5,000 pushes/s: ready after {statistics.median(cms)} ms "
          f"(median of {len(cms)}; each: {', '.join(f'{r[0]} ms with {r[1]} requests replayed' for r in rows)})")
    summary["crash_ready_ms_median"] = statistics.median(cms)
    summary["crash_ready_ms"] = cms
    summary["crash_requests_replayed"] = [r[1] for r in rows]
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF
