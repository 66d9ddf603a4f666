#!/usr/bin/env bash
# The cost of replication in one datacenter: a 3-node local cluster (N=3,
# R=W=2) against a single node, both driven by meridian-bench.
#
#   bench/scripts/compare_cluster.sh           # 3 alternating rounds, 5 s runs
#   QUICK=1 bench/scripts/compare_cluster.sh   # 1 round, 3 s runs (development)
#
# Setup: every measurement starts fresh servers with empty temporary data
# directories and preloads KEYS keys (16-byte keys, 100-byte values).
# Single node: one `meridian server`, no [cluster] members. Cluster: three
# `meridian server` processes on loopback, members "1@..", "2@..", "3@..",
# replicas = 3, read_quorum = write_quorum = 2. Every server: 1 shard,
# 16 partitions, metrics off, default durability ("periodic", fdatasync
# every 100 ms), not pinned. The loader connects to node 1 only, which
# coordinates every request (with N=3 on 3 nodes it is also a replica of
# every key), and is pinned to LOADER_CPU (empty: not pinned).
# The machine has 2 cores: the three nodes and the loader share them, so the
# cluster's figures include that contention, not only the network hop.
# Rounds alternate which side runs first. Prints medians (min-max) and
# writes target/bench-results/cluster.json: a list of
# {"name","value","unit","peer","peer_value","ratio",...} with the cluster's
# figure as value, peer "single-node"; ratio > 1 means the cluster is better
# (throughput: cluster / single; latency: single / cluster). The
# "added p50" rows have value = cluster p50 - single p50 (median over rounds).
#
# Environment: QUICK=1, ROUNDS, DURATION (s), WARMUP (s), KEYS, LOADER_CPU,
# SKIP_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

if [[ "${QUICK:-0}" == 1 ]]; then
    ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-3}; WARMUP=${WARMUP:-0.5}
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}
fi
KEYS=${KEYS:-100000}
LOADER_CPU=${LOADER_CPU-1}
CONNECTIONS=50
KEY_SIZE=16
VALUE_SIZE=100
SINGLE_PORT=17611
CLUSTER_PORTS=(17621 17622 17623)

BIN=$ROOT/target/release
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building release binaries (no-op when up to date)"
    if ! cargo build --release -p meridian-node --bin meridian -p meridian-bench --bin meridian-bench; then
        if [[ -x "$BIN/meridian" && -x "$BIN/meridian-bench" ]]; then
            echo "!! build failed: using the existing binaries in $BIN" >&2
        else
            exit 1
        fi
    fi
fi
OUT=$ROOT/target/bench-results
RAW=$OUT/cluster-raw
mkdir -p "$RAW"
rm -f "$RAW"/*.json
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-cluster.XXXXXX")
SERVER_PIDS=()

stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    SERVER_PIDS=()
    rm -rf "$WORK"/data-*
}
trap 'stop_servers; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# wait_for LOGFILE TEXT PID: until the server prints TEXT (at most 30 s).
# The caller empties LOGFILE before starting the server.
wait_for() {
    for _ in $(seq 300); do
        if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
        if ! kill -0 "$3" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "server did not start; its log ($1):" >&2
    cat "$1" >&2
    return 1
}

# start_node ID PORT [MEMBERS]: one `meridian server`; MEMBERS is the TOML
# array of cluster members ("" for a cluster of one).
start_node() {
    local id=$1 port=$2 members=${3:-}
    mkdir -p "$WORK/data-$id"
    {
        cat <<TOML
[node]
listen = "127.0.0.1:$port"
metrics_listen = ""
node_id = $id
[storage]
data_dir = "$WORK/data-$id"
partitions = 16
durability = "periodic"
[runtime]
shards = 1
TOML
        if [[ -n "$members" ]]; then
            cat <<TOML
[cluster]
members = $members
replicas = 3
read_quorum = 2
write_quorum = 2
TOML
        fi
    } >"$WORK/node-$id.toml"
    : >"$WORK/node-$id.log" # emptied here, not by the child: see wait_for
    "$BIN/meridian" server --config "$WORK/node-$id.toml" --metrics-listen "" \
        >"$WORK/node-$id.log" 2>&1 &
    SERVER_PIDS+=($!)
}

# start_system single|cluster; sets TARGET (the address the loader uses).
start_system() {
    local i
    if [[ "$1" == single ]]; then
        start_node 1 "$SINGLE_PORT"
        wait_for "$WORK/node-1.log" "meridian listening on" "${SERVER_PIDS[0]}"
        TARGET=127.0.0.1:$SINGLE_PORT
    else
        local members="["
        for i in 0 1 2; do
            if (( i > 0 )); then members+=", "; fi
            members+="\"$((i + 1))@127.0.0.1:${CLUSTER_PORTS[$i]}\""
        done
        members+="]"
        for i in 0 1 2; do start_node "$((i + 1))" "${CLUSTER_PORTS[$i]}" "$members"; done
        for i in 0 1 2; do
            wait_for "$WORK/node-$((i + 1)).log" "meridian listening on" "${SERVER_PIDS[$i]}"
        done
        TARGET=127.0.0.1:${CLUSTER_PORTS[0]}
    fi
}

# load NAME [meridian-bench options...]
load() {
    local name=$1
    shift
    local pin=()
    if [[ -n "$LOADER_CPU" ]]; then pin=(--cpu "$LOADER_CPU"); fi
    echo "-- $name"
    if ! "$BIN/meridian-bench" --addr "$TARGET" --protocol meridian "${pin[@]}" \
        --connections "$CONNECTIONS" --keys "$KEYS" --key-size "$KEY_SIZE" \
        --value-size "$VALUE_SIZE" --duration "$DURATION" --warmup "$WARMUP" \
        --preload --label "$name" --json "$RAW/$name.json" "$@"; then
        echo "!! $name failed (kept out of the table)" >&2
        rm -f "$RAW/$name.json"
    fi
}

for port in "$SINGLE_PORT" "${CLUSTER_PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use: stop whatever listens there first" >&2
        exit 1
    fi
done

echo "== $(nproc) cores; the 3 cluster nodes and the loader share them (servers not pinned," \
    "loader on cpu ${LOADER_CPU:-any}); $ROUNDS round(s), ${DURATION} s runs, $KEYS keys"
# workload name -> meridian-bench options
WORKLOADS=(read90-p1 write-p1 read90-p16)
declare -A WORKLOAD_ARGS=(
    [read90-p1]="--pipeline 1 --read-ratio 0.9"
    [write-p1]="--pipeline 1 --read-ratio 0"
    [read90-p16]="--pipeline 16 --read-ratio 0.9"
)
started=$(date +%s)
for round in $(seq "$ROUNDS"); do
    if (( round % 2 == 1 )); then order=(single cluster); else order=(cluster single); fi
    echo "== round $round of $ROUNDS (${order[*]})"
    for workload in "${WORKLOADS[@]}"; do
        for system in "${order[@]}"; do
            start_system "$system"
            # shellcheck disable=SC2086 # the options are words
            load "$workload-$system-$round" ${WORKLOAD_ARGS[$workload]}
            stop_servers
        done
    done
done
echo "== measured in $(( $(date +%s) - started )) s"

python3 - "$RAW" "$OUT/cluster.json" "$ROUNDS" "$(nproc)" <<'PY'
import json, os, statistics, sys

raw, out_path, rounds, cores = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def load(name):
    path = os.path.join(raw, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

WORKLOADS = [
    ("read90-p1", "50 conns, P1, 90% reads"),
    ("write-p1", "50 conns, P1, 100% writes"),
    ("read90-p16", "50 conns, P16, 90% reads"),
]
# (figure, extract, unit, higher is better)
MEASURES = [
    ("throughput", lambda r: r["throughput_ops"], "ops/s", True),
    ("p50", lambda r: r["latency"]["p50_us"], "us", False),
    ("p99", lambda r: r["latency"]["p99_us"], "us", False),
    ("p99.9", lambda r: r["latency"]["p999_us"], "us", False),
]

def span(values):
    return (statistics.median(values), min(values), max(values)) if values else None

def fmt(s, digits=0):
    return "-" if s is None else f"{s[0]:,.{digits}f} ({s[1]:,.{digits}f}-{s[2]:,.{digits}f})"

rows, table, errors = [], [], []
for key, title in WORKLOADS:
    runs = [(load(f"{key}-cluster-{n}"), load(f"{key}-single-{n}")) for n in range(1, rounds + 1)]
    for c, s in runs:
        for r in (c, s):
            if r and (r["errors"] or r["failures"]):
                errors.append(f'{r["label"]}: {r["errors"]} error replies, {len(r["failures"])} failures')
    for figure, extract, unit, higher in MEASURES:
        mine = [extract(c) for c, _ in runs if c]
        theirs = [extract(s) for _, s in runs if s]
        ratios = [(extract(c) / extract(s) if higher else extract(s) / extract(c))
                  for c, s in runs if c and s and extract(c) and extract(s)]
        m, p, q = span(mine), span(theirs), span(ratios)
        name = f"{title}: {figure}"
        rows.append({
            "name": name, "value": m and m[0], "unit": unit, "peer": "single-node",
            "peer_value": p and p[0], "ratio": q and round(q[0], 4),
            "value_min": m and m[1], "value_max": m and m[2],
            "peer_min": p and p[1], "peer_max": p and p[2],
            "ratio_min": q and round(q[1], 4), "ratio_max": q and round(q[2], 4),
            "rounds": len(ratios),
        })
        digits = 0 if unit == "ops/s" else 1
        ratio = "-" if q is None else f"{q[0]:.2f}x ({q[1]:.2f}-{q[2]:.2f})"
        table.append((name, unit, fmt(m, digits), fmt(p, digits), ratio))
    # the extra hop's cost in latency: cluster p50 - single p50, per round
    p50 = lambda r: r["latency"]["p50_us"]
    added = [p50(c) - p50(s) for c, s in runs if c and s]
    a, p = span(added), span([p50(s) for _, s in runs if s])
    q = span([p50(s) / p50(c) for c, s in runs if c and s and p50(c)])
    name = f"{title}: added p50 (cluster - single)"
    rows.append({
        "name": name, "value": a and a[0], "unit": "us", "peer": "single-node",
        "peer_value": p and p[0], "ratio": q and round(q[0], 4),
        "value_min": a and a[1], "value_max": a and a[2],
        "rounds": len(added),
    })
    table.append((name, "us", ("+" if a and a[0] >= 0 else "") + fmt(a, 1), fmt(p, 1) + " (p50)", "-"))

headers = ("figure", "unit", "cluster median (min-max)", "single-node median (min-max)",
           "cluster/single (>1 cluster better)")
widths = [max(len(str(r[i])) for r in table + [headers]) for i in range(len(headers))]
line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths))
print()
print(f"3-node cluster (N=3, R=W=2, loopback) vs single node; {rounds} round(s); "
      f"{cores} cores shared by the 3 nodes and the loader")
print(line(headers))
print("-+-".join("-" * w for w in widths))
for r in table:
    print(line(r))
for e in errors:
    print("!! " + e)
json.dump(rows, open(out_path, "w"), indent=2)
print(f"\nwrote {out_path}")
PY
