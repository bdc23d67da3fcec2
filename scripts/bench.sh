#!/usr/bin/env bash
# Runs every benchmark in docs/benchmarks.md again, on this machine, and prints the figures.
#   scripts/bench.sh            # lone call and load (vs transport, raw SurrealDB, Redis), the
#                               # engine breakdown, a burst's memory, scale, soak, long fuzz
#   SECONDS_PER=20 CONNECTIONS=64 scripts/bench.sh
# Needs redis-server (Debian: apt-get install redis-server). Everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/authstore/target}"
PORT="${PORT:-8790}"
SECONDS_PER="${SECONDS_PER:-10}"
CONNECTIONS="${CONNECTIONS:-16}"
IN_FLIGHT="${IN_FLIGHT:-4}"
SOAK_CYCLES="${SOAK_CYCLES:-100}"
SCALE_RECORDS="${SCALE_RECORDS:-1000000}"
FUZZ_CASES="${FUZZ_CASES:-200000}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release --locked -p authstore -p authstore-tools
bin="$CARGO_TARGET_DIR/release/authstore"
tools="$CARGO_TARGET_DIR/release/authstore-tools"

echo "== machine"
nproc; grep -m1 'model name' /proc/cpuinfo || true; free -h | head -2

echo "== starting authstore (SurrealKV, fsync per commit) and Redis (appendfsync always / everysec)"
RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$PORT" --db "surrealkv://$work/authstore" &
pids+=($!)
redis-server --port 6390 --save '' --appendonly yes --appendfsync always --dir "$work" --appendfilename always.aof &
pids+=($!)
redis-server --port 6391 --save '' --appendonly yes --appendfsync everysec --dir "$work" --appendfilename everysec.aof &
pids+=($!)
sleep 2

echo "== lone call (1 connection, 1 in flight)"
"$tools" bench --url "ws://127.0.0.1:$PORT" --seconds 5 --connections 1 --in-flight 1 --preload 2000 \
    --workloads ping,session.put,session.get,token.get,code.consume \
    --raw "surrealkv://$work/raw1" --redis always=127.0.0.1:6390 --redis everysec=127.0.0.1:6391

echo "== load"
"$tools" bench --url "ws://127.0.0.1:$PORT" --seconds "$SECONDS_PER" --connections "$CONNECTIONS" --in-flight "$IN_FLIGHT" \
    --half-peak --raw "surrealkv://$work/raw" --redis always=127.0.0.1:6390 --redis everysec=127.0.0.1:6391
kill "${pids[0]}" 2>/dev/null || true

echo "== engine (a lone write inside SurrealDB, one part taken away at a time)"
"$tools" engine --dir "$work/engine"

echo "== memory after a burst of malformed frames (client never waits for answers)"
TOOLS="$tools" PORT=$((PORT + 3)) scripts/burst-rss.sh authstore "$bin" --window 1000000

echo "== memory while clients that read nothing flood it (reset after --write-stall-ms, 90 s)"
TOOLS="$tools" PORT=$((PORT + 3)) scripts/stall-rss.sh authstore "$bin" --connections 4 --frames 2000000

echo "== scale ($SCALE_RECORDS records)"
"$tools" scale --dir "$work/scale" --records "$SCALE_RECORDS" --port $((PORT + 2))

echo "== soak ($SOAK_CYCLES SIGKILL cycles)"
"$tools" soak --cycles "$SOAK_CYCLES" --dir "$work/soak" --port $((PORT + 1))

echo "== fuzz ($FUZZ_CASES cases)"
PROPTEST_CASES="$FUZZ_CASES" cargo test --locked --test it fuzz -- --nocapture
