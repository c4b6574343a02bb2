# Start and stop the peers on loopback (sourced by benches/run-peers.sh, not run).
# Each start picks a free port, writes what it needs under a temp dir, and sets PEER_PID
# (the server's own pid: RSS and CPU are read from /proc/PEER_PID), PEER_ADDR and PEER_DIR.

PEERS_DIR=${PEERS_DIR:-target/peers}
PEER_PID=""
PEER_ADDR=""
PEER_DIR=""

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts (up to 30 s) or PID exits.
wait_port() {
    local port=$1 pid=$2
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_peer soketi|mosquitto|nats
start_peer() {
    local kind=$1 port
    port=$(free_port)
    PEER_DIR=$(mktemp -d -t warbler-peer.XXXXXX)
    PEER_ADDR=127.0.0.1:$port
    case $kind in
        soketi)
            # The default app (app-id / app-key / app-secret) has no limits; metrics off.
            SOKETI_HOST=127.0.0.1 SOKETI_PORT=$port SOKETI_METRICS_ENABLED=false \
                SOKETI_DEBUG=false \
                node "$PEERS_DIR/soketi/node_modules/@soketi/soketi/bin/server.js" start \
                >"$PEER_DIR/stdout.log" 2>"$PEER_DIR/stderr.log" &
            ;;
        mosquitto)
            # QoS 1 deliveries beyond the 20 in flight per client wait in a queue; make it
            # deep enough that no broadcast is dropped for lack of room.
            cat >"$PEER_DIR/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 1000000
log_dest stderr
log_type error
log_type warning
CONF
            mosquitto -c "$PEER_DIR/mosquitto.conf" >"$PEER_DIR/stdout.log" 2>"$PEER_DIR/stderr.log" &
            ;;
        nats)
            "$PEERS_DIR/nats-venv/bin/nats-server" -a 127.0.0.1 -p "$port" \
                >"$PEER_DIR/stdout.log" 2>"$PEER_DIR/stderr.log" &
            ;;
        *)
            echo "peers: unknown peer $kind" >&2
            return 2
            ;;
    esac
    PEER_PID=$!
    if ! wait_port "$port" "$PEER_PID"; then
        echo "peers: $kind did not start on $PEER_ADDR:" >&2
        tail -20 "$PEER_DIR/stderr.log" "$PEER_DIR/stdout.log" >&2
        stop_peer
        return 1
    fi
    echo "peers: $kind $PEER_PID on $PEER_ADDR" >&2
}

# stop_peer: SIGTERM, up to 15 s, then SIGKILL; removes its temp dir.
stop_peer() {
    [[ -z $PEER_PID ]] && return 0
    kill -TERM "$PEER_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do
        kill -0 "$PEER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
    [[ -n $PEER_DIR ]] && rm -rf "$PEER_DIR"
    PEER_PID=""
}
