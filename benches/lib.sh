# Shared helpers for the benchmark scripts (sourced, not run).
# Loopback only: servers listen on 127.0.0.1 with a port the kernel picks.

BIN=${BIN:-target/release/warbler}
# DURABILITY=relaxed starts servers that answer before fsync (default: immediate).
# JOURNAL=false makes immediate commits fsync the database file instead of the journal.
# PLAIN=1 starts servers without TLS (tls.mode = "off", serve --insecure-plaintext).
# Optional CPU pinning, e.g. SERVER_CPUS=0 BENCH_CPUS=1 (empty: no pinning).
SERVER_CPUS=${SERVER_CPUS:-}
BENCH_CPUS=${BENCH_CPUS:-}

SERVER_PID=""
SERVER_URL=""
SERVER_DIR=""

pin() { # pin CPUS CMD...: run CMD pinned to CPUS when CPUS is set
    local cpus=$1; shift
    if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

build_release() {
    if [[ ${SKIP_BUILD:-0} == 1 && -x $BIN ]]; then
        echo "bench: SKIP_BUILD=1, using $BIN" >&2
        return
    fi
    echo "bench: cargo build --release (a few minutes on a small box)" >&2
    cargo build --release --quiet
}

# start_server: a fresh server on a new temp data dir; sets SERVER_PID, SERVER_URL, SERVER_DIR.
start_server() {
    SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/warbler-bench.XXXXXX")
    mkdir "$SERVER_DIR/data"
    cat >"$SERVER_DIR/config.toml" <<EOF
[server]
listen = "127.0.0.1:0"
[storage]
durability = "${DURABILITY:-immediate}"
journal = ${JOURNAL:-true}
cache_mib = ${CACHE_MIB:-256}
[limits]
# The benchmark measures the server, not its per-app rate limit.
pushes_per_second = 1000000000
[log]
level = "info"
EOF
    if [[ ${PLAIN:-0} == 1 ]]; then
        printf '[tls]\nmode = "off"\n' >>"$SERVER_DIR/config.toml"
    fi
    local cmd=("$BIN" serve --config "$SERVER_DIR/config.toml" --data "$SERVER_DIR/data")
    [[ ${PLAIN:-0} == 1 ]] && cmd+=(--insecure-plaintext)
    # taskset execs the server, so $! is the server's own pid either way.
    [[ -n $SERVER_CPUS ]] && cmd=(taskset -c "$SERVER_CPUS" "${cmd[@]}")
    "${cmd[@]}" >"$SERVER_DIR/stdout.log" 2>"$SERVER_DIR/stderr.log" &
    SERVER_PID=$!
    local i
    for i in $(seq 1 300); do # up to 30 s
        SERVER_URL=$(sed -n 's/^listening on \(https\{0,1\}:\/\/[0-9.:]*\).*/\1/p' "$SERVER_DIR/stdout.log" 2>/dev/null)
        [[ -n $SERVER_URL ]] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench: server exited at start:" >&2
            cat "$SERVER_DIR/stderr.log" >&2
            return 1
        fi
        sleep 0.1
    done
    if [[ -z $SERVER_URL ]]; then
        echo "bench: server did not start within 30 s" >&2
        return 1
    fi
    echo "bench: server $SERVER_PID on $SERVER_URL (data $SERVER_DIR)" >&2
}

# stop_server: SIGTERM, wait up to 30 s, then SIGKILL; removes the data dir unless KEEP=1.
stop_server() {
    [[ -z $SERVER_PID ]] && return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 300); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "bench: server $SERVER_PID did not stop in 30 s; killing it" >&2
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    if [[ ${KEEP:-0} != 1 && -n $SERVER_DIR ]]; then
        rm -rf "$SERVER_DIR"
    fi
    SERVER_PID=""
}

# bench LIMIT_SECONDS ARGS...: run `warbler bench` against the current server, bounded in time.
bench() {
    local limit=$1; shift
    # Other work on the box skews results: log the load average before every run.
    [[ -n ${OUT:-} ]] && echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg) bench $*" >>"$OUT/loadavg.log"
    pin "$BENCH_CPUS" timeout --signal=INT --kill-after=10 "$limit" \
        "$BIN" bench --url "$SERVER_URL" --data "$SERVER_DIR/data" --server-pid "$SERVER_PID" \
        "$@"
}
