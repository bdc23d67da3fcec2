#!/usr/bin/env bash
# Starts the server binary BIN on a fresh SurrealKV directory on 127.0.0.1:$PORT (default 8791),
# waits for /health, runs COMMAND with SERVER_PID and SERVER_URL set, then stops the server:
#   scripts/with-server.sh BIN COMMAND [ARGS...]
set -u
bin=$1
shift
port="${PORT:-8791}"
dir=$(mktemp -d)
RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --db "surrealkv://$dir/db" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
SERVER_PID=$pid SERVER_URL="ws://127.0.0.1:$port" "$@"
