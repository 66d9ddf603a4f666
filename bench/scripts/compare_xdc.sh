#!/usr/bin/env bash
# Cross-datacenter replication (issue #5): lag, throughput under added
# round trips, bytes per record, fullsync, and the cost of a link, between
# two single-node datacenters on loopback, measured by xdc-bench.
#
#   bench/scripts/compare_xdc.sh           # full run, ~5-8 minutes
#   bench/scripts/compare_xdc.sh --quick   # smoke run (100K keys, 2 s windows), ~1-2 minutes
#   QUICK=1 bench/scripts/compare_xdc.sh   # the same as --quick
#
# Setup (xdc-bench prints it): the origin datacenter is pinned to cpu 0
# (taskset -a -p, every thread), the remote datacenter, the writer, the lag
# poller and the link proxy to cpu 1 (this machine has 2 cores). Every
# server: 1 shard, 16 partitions, durability "periodic" (fdatasync every
# 100 ms), [xdc] defaults, metrics off, a fresh temporary data directory
# per phase. Delay comes from a user-space proxy (tests/src/proxy.rs):
# set_delay = half the added round trip, each direction.
#
# Writes target/bench-results/xdc.json (the schema of server.json and
# cluster.json: a list of {"name","value","unit","peer","peer_value",
# "ratio","value_min","value_max","peer_min","peer_max","ratio_min",
# "ratio_max","goal_ratio","met","rounds"}; ratio > 1 means better, for
# lower-is-better figures ratio = reference / value) and every phase's raw
# figures to target/bench-results/xdc-raw/run.json.
#
# Environment: ORIGIN_CPU, REMOTE_CPU, SKIP_BUILD=1. Extra arguments go to
# xdc-bench (see `target/release/xdc-bench --help`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

ARGS=()
if [[ "${QUICK:-0}" == 1 ]]; then ARGS+=(--quick); fi
ARGS+=("$@")
ORIGIN_CPU=${ORIGIN_CPU:-0}
REMOTE_CPU=${REMOTE_CPU:-1}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building release binaries"
    cargo build --release -p meridian-node --bin meridian -p meridian-bench --bin xdc-bench
fi
BIN=$ROOT/target/release
mkdir -p "$ROOT/target/bench-results/xdc-raw"

# Every server is a child of xdc-bench, which kills it on exit (its
# ServerProcess handles); MERIDIAN_BIN points them at the release build.
MERIDIAN_BIN="$BIN/meridian" taskset -c "$REMOTE_CPU" "$BIN/xdc-bench" \
    --origin-cpu "$ORIGIN_CPU" --remote-cpu "$REMOTE_CPU" \
    --json "$ROOT/target/bench-results/xdc.json" \
    --raw "$ROOT/target/bench-results/xdc-raw/run.json" "${ARGS[@]}" \
    2>&1 | tee "$ROOT/target/bench-results/xdc-raw/run.log"
exit "${PIPESTATUS[0]}"
