"""Medians and ratios of a benches/run-peers.sh run: prints a Markdown table, writes summary.json.

Usage: python3 benches/peers/summary.py OUT_DIR
"""
import json
import pathlib
import statistics
import sys

out = pathlib.Path(sys.argv[1])

# (system, transport as measured, what a delivery is)
CONN = [
    ("warbler", "TLS WebSocket", "device with its own mailbox"),
    ("warbler_plain", "plain WebSocket (tls.mode = off)", "device with its own mailbox"),
    ("soketi", "plain WebSocket (Pusher 7)", "subscribed to its own public channel"),
    ("mosquitto", "plain TCP (MQTT 3.1.1)", "subscribed to its own topic, QoS 1"),
    ("nats", "plain TCP (NATS core)", "subscribed to its own subject"),
]
FAN = [
    ("warbler", "TLS WebSocket", "acked, ack stored durably; {senders} API senders (HTTPS)"),
    ("warbler_plain", "plain WebSocket (tls.mode = off)", "acked, ack stored durably; {senders} API senders (HTTP)"),
    ("soketi", "plain WebSocket (Pusher 7)", "not acked; {senders} HTTP API senders (signed POSTs)"),
    ("mosquitto-qos1", "plain TCP (MQTT 3.1.1)", "QoS 1: PUBACK per delivery; one publisher"),
    ("mosquitto-qos0", "plain TCP (MQTT 3.1.1)", "QoS 0: not acked; one publisher"),
    ("nats", "plain TCP (NATS core)", "not acked; one publisher"),
]


def runs(prefix):
    found = []
    for p in sorted(out.glob(prefix + "-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        try:
            found.append((p, json.loads(p.read_text())))
        except ValueError:
            pass
    return found


def get(r, path):
    v = r
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) else None


def med(rs, path):
    vals = [v for v in (get(r, path) for _, r in rs) if v is not None]
    return statistics.median(vals) if vals else None


def loads(rs):
    vals = []
    for p, _ in rs:
        f = p.with_suffix(".load")
        if f.exists():
            vals.append(f.read_text().strip())
    return vals


def fmt(v, nd=1):
    if v is None:
        return "-"
    return f"{v:,.0f}" if nd == 0 else f"{v:,.{nd}f}"


summary = {"connections": {}, "fanout": {}}
print((out / "machine.txt").read_text().strip())

print("\n### Idle connections: server RSS per connection (medians)\n")
print("| system | transport | connection | runs | connected | KiB per connection | each run | warbler ÷ this | 1-min load |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
ours = None
for name, transport, what in CONN:
    rs = runs("conn-" + name)
    if not rs:
        continue
    row = {
        "transport": transport,
        "runs": len(rs),
        "connected": med(rs, "connected"),
        "requested": med(rs, "requested"),
        "rss_per_connection_kib": med(rs, "server_rss_per_connection_kib"),
        "rss_before_kib": med(rs, "server_rss_before_kib"),
        "rss_after_hold_kib": med(rs, "server_rss_after_hold_kib"),
        "dropped": med(rs, "dropped"),
        "each": [get(r, "server_rss_per_connection_kib") for _, r in rs],
        "load": loads(rs),
    }
    if name == "warbler":
        ours = row["rss_per_connection_kib"]
    v = row["rss_per_connection_kib"]
    ratio = ours / v if ours is not None and v else None
    row["warbler_over_this"] = ratio
    summary["connections"][name] = row
    print(f"| {name} | {transport} | {what} | {row['runs']} | {fmt(row['connected'], 0)} of "
          f"{fmt(row['requested'], 0)} | **{fmt(v, 2)}** | {', '.join(fmt(x, 2) for x in row['each'])} | "
          f"{'-' if name == 'warbler' else fmt(ratio, 2) + '×'} | {', '.join(row['load'])} |")

print("\n### 1 → N fan-out, flat out (medians)\n")
print("| system | transport | delivery | runs | deliveries/s | each run | warbler ÷ this | same round | p50 / p99 ms | missing | server µs per delivery | 1-min load |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
ours = None
ours_by_round = {}


def by_round(rs):
    """Deliveries/s of each run, keyed by its round (the number in its file name)."""
    return {int(p.stem.rsplit("-", 1)[1]): get(r, "deliveries_per_s") for p, r in rs}


def round_ratio(theirs):
    """Median over rounds of warbler's run ÷ this system's run of the same round: runs of one
    round are minutes apart, so a slow or fast phase of the box touches both."""
    vals = [ours_by_round[k] / v for k, v in theirs.items() if v and ours_by_round.get(k)]
    return statistics.median(vals) if vals else None


for name, transport, what in FAN:
    rs = runs("fan-" + name)
    if not rs:
        continue
    r0 = rs[0][1]
    what = what.replace("{senders}", str(r0.get("senders", "?")))
    row = {
        "transport": transport,
        "runs": len(rs),
        "devices": r0.get("devices"),
        "broadcasts": r0.get("broadcasts"),
        "deliveries_per_s": med(rs, "deliveries_per_s"),
        "p50_ms": med(rs, "latency.p50_ms"),
        "p99_ms": med(rs, "latency.p99_ms"),
        "missing": med(rs, "missing"),
        "missing_max": max((get(r, "missing") or 0) for _, r in rs),
        "server_cpu_us_per_delivery": med(rs, "server_cpu_us_per_delivery"),
        "server_cpu_cores": med(rs, "server_cpu_cores"),
        "client_cpu_cores": med(rs, "client_cpu_cores"),
        "each": [get(r, "deliveries_per_s") for _, r in rs],
        "load": loads(rs),
    }
    if name == "warbler":
        ours = row["deliveries_per_s"]
        ours_by_round = by_round(rs)
    v = row["deliveries_per_s"]
    ratio = ours / v if ours is not None and v else None
    row["warbler_over_this"] = ratio
    same_round = None if name == "warbler" else round_ratio(by_round(rs))
    row["warbler_over_this_same_round"] = same_round
    summary["fanout"][name] = row
    print(f"| {name} | {transport} | {what} | {row['runs']} | **{fmt(v, 0)}** | "
          f"{', '.join(fmt(x, 0) for x in row['each'])} | "
          f"{'-' if name == 'warbler' else fmt(ratio, 2) + '×'} | "
          f"{'-' if same_round is None else fmt(same_round, 2) + '×'} | "
          f"{fmt(row['p50_ms'])} / {fmt(row['p99_ms'])} | "
          f"{fmt(row['missing'], 0)} (max {fmt(row['missing_max'], 0)}) | "
          f"{fmt(row['server_cpu_us_per_delivery'], 2)} | {', '.join(row['load'])} |")
if summary["fanout"]:
    any_row = next(iter(summary["fanout"].values()))
    print(f"\nfan-out size: {any_row['devices']} subscribers × {any_row['broadcasts']} broadcasts. "
          "RSS ratio below 1 and deliveries ratio above 1 favour warbler. "
          "'same round': the median of the per-round ratios.")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

# Exit non-zero when any run lost something, so a smoke run proves the shapes work.
bad = []
for p, r in runs("conn-*"):
    if r.get("connected") != r.get("requested") or r.get("dropped"):
        bad.append(f"{p.name}: connected {r.get('connected')} of {r.get('requested')}, dropped {r.get('dropped')}")
for p, r in runs("fan-*"):
    if r.get("missing") or not r.get("delivered"):
        bad.append(f"{p.name}: delivered {r.get('delivered')}, missing {r.get('missing')}")
for line in bad:
    print(f"PROBLEM {line}", file=sys.stderr)
sys.exit(1 if bad else 0)
