#!/usr/bin/env bash
# Meridian's server against Redis (and its transport against a tokio PING
# server), one node on one core each, same loader on the other core.
#
#   bench/scripts/compare_server.sh            # 3 interleaved pairs, ~6 s runs
#   QUICK=1 bench/scripts/compare_server.sh    # 1 pair, 3 s runs (development)
#
# Setup: the server under test is pinned to cpu 0 (taskset), the loader
# (meridian-bench) to cpu 1. Every measurement starts a fresh server with an
# empty data directory; read figures preload the key space first.
# Meridian: 1 shard, metrics off, 16 partitions, default durability
# ("periodic", fdatasync every 100 ms) unless a figure says otherwise.
# Redis: --save "" --appendonly no unless a figure says otherwise.
# Pairs alternate which side runs first. Besides the issue's figures a-f,
# each pair measures three reference rows (no goal): c's ceiling (Meridian
# writes with no fsync), d's floor (a PING-only tokio server's CPU at e's
# rate) and f's ceiling (tokio's kernel CPU per PING against its whole).
# Prints medians (min-max) and writes target/bench-results/server.json: a
# list of {"name","system","value","unit","peer","peer_value","ratio",...},
# ratio > 1 meaning the measured system is better (for lower-is-better
# figures, ratio = peer / system).
#
# Environment: QUICK=1, PAIRS, DURATION (s), WARMUP (s), KEYS, SERVER_CPU,
# LOADER_CPU, SKIP_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

if [[ "${QUICK:-0}" == 1 ]]; then
    PAIRS=${PAIRS:-1}; DURATION=${DURATION:-3}; WARMUP=${WARMUP:-0.5}
else
    PAIRS=${PAIRS:-3}; DURATION=${DURATION:-6}; WARMUP=${WARMUP:-1}
fi
KEYS=${KEYS:-1000000}
SERVER_CPU=${SERVER_CPU:-0}
LOADER_CPU=${LOADER_CPU:-1}
CONNECTIONS=50
KEY_SIZE=16
VALUE_SIZE=100
MERIDIAN_PORT=17411
REDIS_PORT=17379
TOKIO_PORT=17500

if ! command -v redis-server >/dev/null; then
    echo "== installing redis-server (Debian)"
    apt-get update && apt-get install -y redis-server
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building release binaries"
    cargo build --release -p meridian-node --bin meridian
    cargo build --release -p meridian-bench --bin meridian-bench --bin ping_server_tokio
fi
BIN=$ROOT/target/release
OUT=$ROOT/target/bench-results
RAW=$OUT/server-raw
mkdir -p "$RAW"
rm -f "$RAW"/*.json
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-compare.XXXXXX")
SERVER_PID=""

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    rm -rf "$WORK/data"
}
trap 'stop_server; rm -rf "$WORK"' EXIT

# wait_for LOGFILE TEXT: until the server prints TEXT (at most 30 s). The
# caller empties LOGFILE before starting the server, so an old server's line
# cannot be mistaken for the new one's.
wait_for() {
    for _ in $(seq 300); do
        if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "server did not start; its log:" >&2
    cat "$1" >&2
    return 1
}

# start_meridian DURABILITY
start_meridian() {
    mkdir -p "$WORK/data"
    cat >"$WORK/meridian.toml" <<TOML
[node]
listen = "127.0.0.1:$MERIDIAN_PORT"
metrics_listen = ""
[storage]
data_dir = "$WORK/data"
partitions = 16
durability = "$1"
[runtime]
shards = 1
TOML
    : >"$WORK/server.log" # emptied here, not by the child: see wait_for
    taskset -c "$SERVER_CPU" "$BIN/meridian" server --config "$WORK/meridian.toml" \
        --metrics-listen "" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for "$WORK/server.log" "meridian listening on"
}

# start_redis memory|fsync
start_redis() {
    mkdir -p "$WORK/data"
    local persistence=(--save "" --appendonly no)
    if [[ "$1" == fsync ]]; then
        persistence=(--save "" --appendonly yes --appendfsync always)
    fi
    : >"$WORK/server.log" # emptied here, not by the child: see wait_for
    taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --dir "$WORK/data" "${persistence[@]}" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for "$WORK/server.log" "Ready to accept connections"
}

start_tokio_ping() {
    : >"$WORK/server.log" # emptied here, not by the child: see wait_for
    taskset -c "$SERVER_CPU" "$BIN/ping_server_tokio" "127.0.0.1:$TOKIO_PORT" \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for "$WORK/server.log" "listening on"
}

# load NAME SYSTEM [meridian-bench options...]; SYSTEM picks address and protocol.
load() {
    local name=$1 system=$2
    shift 2
    local target
    case "$system" in
        meridian) target=(--addr "127.0.0.1:$MERIDIAN_PORT" --protocol meridian) ;;
        redis) target=(--addr "127.0.0.1:$REDIS_PORT" --protocol resp) ;;
        tokio) target=(--addr "127.0.0.1:$TOKIO_PORT" --protocol meridian) ;;
    esac
    echo "-- $name"
    if ! "$BIN/meridian-bench" "${target[@]}" --cpu "$LOADER_CPU" \
        --connections "$CONNECTIONS" --keys "$KEYS" --key-size "$KEY_SIZE" \
        --value-size "$VALUE_SIZE" --duration "$DURATION" --warmup "$WARMUP" \
        --server-pid "$SERVER_PID" --label "$name" --json "$RAW/$name.json" "$@"; then
        echo "!! $name failed (kept out of the table)" >&2
        rm -f "$RAW/$name.json"
    fi
}

start_system() { # SYSTEM [durable]
    case "$1" in
        meridian) start_meridian "${2:-periodic}" ;;
        redis) start_redis "${2:-memory}" ;;
        tokio) start_tokio_ping ;;
    esac
}

throughput_of() { # JSON file -> ops/s (integer), 0 if missing
    python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["throughput_ops"]))' "$1" 2>/dev/null || echo 0
}

for port in "$MERIDIAN_PORT" "$REDIS_PORT" "$TOKIO_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use: stop whatever listens there first" >&2
        exit 1
    fi
done

started=$(date +%s)
for pair in $(seq "$PAIRS"); do
    if (( pair % 2 == 1 )); then order=(meridian redis); else order=(redis meridian); fi
    echo "== pair $pair of $PAIRS (${order[*]})"
    for system in "${order[@]}"; do
        start_system "$system"
        load "a-$system-$pair" "$system" --pipeline 1 --read-ratio 0.9 --preload
        stop_server
        start_system "$system"
        load "b-$system-$pair" "$system" --pipeline 16 --read-ratio 0.9 --preload
        stop_server
    done
    redis_max=$(throughput_of "$RAW/a-redis-$pair.json")
    rate=$(( redis_max / 2 ))
    if (( rate > 0 )); then
        for system in "${order[@]}"; do
            start_system "$system"
            load "e-$system-$pair" "$system" --pipeline 1 --read-ratio 0.9 --preload --rate "$rate"
            stop_server
        done
    fi
    for system in "${order[@]}"; do
        start_system "$system" "$([[ $system == meridian ]] && echo sync || echo fsync)"
        load "c-$system-$pair" "$system" --pipeline 1 --read-ratio 0
        stop_server
    done
    # Ceilings (reference rows, no goal): c's writes with no fsync at all,
    # the most durability could ever give; and the CPU per request of the
    # leanest transport (tokio, PING only) at e's rate, the floor under d.
    start_system meridian periodic
    load "c0-meridian-$pair" meridian --pipeline 1 --read-ratio 0
    stop_server
    if (( rate > 0 )); then
        start_system tokio
        load "d0-tokio-$pair" tokio --pipeline 1 --ping --rate "$rate"
        stop_server
    fi
    for system in meridian tokio; do
        [[ "${order[0]}" == redis ]] && system=$([[ $system == meridian ]] && echo tokio || echo meridian)
        start_system "$system"
        load "f-$system-$pair" "$system" --pipeline 1 --ping
        stop_server
    done
done
echo "== measured in $(( $(date +%s) - started )) s"

python3 - "$RAW" "$OUT/server.json" "$PAIRS" <<'PY'
import json, os, statistics, sys

raw, out_path, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])

def load(name):
    path = os.path.join(raw, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

# (name, run of the measured side, run of the peer side, extract, unit,
#  higher is better, goal ratio or None for a reference row[, the peer
# side's extract when it differs]); a run is (figure prefix, system), its
# files RAW/prefix-system-pair.json.
THROUGHPUT = lambda r: r["throughput_ops"]
CPU = lambda r: r["server_cpu_us_per_request"]
SYSTEM_CPU = lambda r: (r["server_cpu_us_per_request"] * r["server_cpu_system_s"]
                        / r["server_cpu_s"]) if r.get("server_cpu_s") else None
FIGURES = [
    ("a: 50 conns, no pipelining, 90% reads", ("a", "meridian"), ("a", "redis"),
     THROUGHPUT, "ops/s", True, 1.0),
    ("b: 50 conns, pipeline 16, 90% reads", ("b", "meridian"), ("b", "redis"),
     THROUGHPUT, "ops/s", True, 1.3),
    ("c: durable writes (sync vs appendfsync always)", ("c", "meridian"), ("c", "redis"),
     THROUGHPUT, "ops/s", True, 2.0),
    ("d: server CPU per 1M requests at the rate of e", ("e", "meridian"), ("e", "redis"),
     CPU, "cpu s/1M req", False, 1 / 0.7),
    ("d': server CPU per 1M requests, saturated (run a)", ("a", "meridian"), ("a", "redis"),
     CPU, "cpu s/1M req", False, 1 / 0.7),
    ("e: p99 at half Redis's max rate", ("e", "meridian"), ("e", "redis"),
     lambda r: r["latency"]["p99_us"], "us", False, 1.0),
    ("f: PING throughput (transport)", ("f", "meridian"), ("f", "tokio"),
     THROUGHPUT, "ops/s", True, 1.2),
    # Ceilings: what c and d could reach at best on this machine.
    ("c ceiling: Meridian writes with no fsync vs Redis appendfsync always",
     ("c0", "meridian"), ("c", "redis"), THROUGHPUT, "ops/s", True, None),
    ("d floor: tokio PING-only server's CPU at the rate of e vs Redis",
     ("d0", "tokio"), ("e", "redis"), CPU, "cpu s/1M req", False, None),
    # The kernel's CPU per PING against the whole (same run): a server with
    # no user-space cost at all and tokio's kernel cost would gain this much.
    ("f ceiling: tokio's kernel CPU alone vs its whole CPU per PING",
     ("f", "tokio"), ("f", "tokio"), SYSTEM_CPU, "cpu s/1M req", False, None, CPU),
]

def span(values):
    return (statistics.median(values), min(values), max(values)) if values else None

rows, table = [], []
for name, (prefix, ours), (peer_prefix, peer), extract, unit, higher, goal, *rest in FIGURES:
    peer_extract = rest[0] if rest else extract
    mine, theirs, ratios = [], [], []
    for pair in range(1, pairs + 1):
        a, b = load(f"{prefix}-{ours}-{pair}"), load(f"{peer_prefix}-{peer}-{pair}")
        x = extract(a) if a else None
        y = peer_extract(b) if b else None
        if x is not None: mine.append(x)
        if y is not None: theirs.append(y)
        if x and y:
            ratios.append(x / y if higher else y / x)
    m, p, q = span(mine), span(theirs), span(ratios)
    rate = None
    if prefix == "e":
        e = load(f"e-{ours}-1")
        rate = e and e.get("target_rate_ops")
    met = None if goal is None else bool(q and q[0] >= goal - 1e-9)
    rows.append({
        "name": name, "system": ours, "value": m and m[0], "unit": unit, "peer": peer,
        "peer_value": p and p[0], "ratio": q and q[0],
        "ratio_min": q and q[1], "ratio_max": q and q[2],
        "goal_ratio": None if goal is None else round(goal, 3), "met": met,
        "rounds": len(ratios), **({"rate_ops": rate} if rate else {}),
    })
    fmt = lambda s: "-" if s is None else f"{s[0]:,.1f} ({s[1]:,.1f}-{s[2]:,.1f})"
    ratio = "-" if q is None else f"{q[0]:.2f}x ({q[1]:.2f}-{q[2]:.2f})"
    table.append((name, unit, ours, fmt(m), peer, fmt(p), ratio,
                  "reference" if goal is None else f">= {goal:.2f}x",
                  "" if met is None else ("met" if met else "MISSED")))

headers = ("figure", "unit", "system", "median (min-max)", "peer", "peer median (min-max)",
           "ratio (>1: system better)", "goal", "")
widths = [max(len(str(r[i])) for r in table + [headers]) for i in range(len(headers))]
line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths))
print()
print(line(headers))
print("-+-".join("-" * w for w in widths))
for r in table:
    print(line(r))
json.dump(rows, open(out_path, "w"), indent=2)
print(f"\nwrote {out_path}")
PY
