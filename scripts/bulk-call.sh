#!/bin/sh
# Times one JSON-RPC call on a fresh server: bulk-call.sh BINARY DBDIR PORT METHOD PARAMS
# (docs/benchmarks.md, "Changes in pages"). Starts BINARY on the SurrealKV directory DBDIR,
# waits for /ready, sends the call with websocat, prints the answer and the time, stops it.
set -eu
BIN=$1; DB=$2; PORT=$3
"$BIN" serve --listen "127.0.0.1:$PORT" --db "surrealkv://$DB" > "$DB.log" 2>&1 &
PID=$!
tries=0
until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do
  tries=$((tries + 1))
  if [ $tries -gt 300 ]; then echo "the server never got ready (log: $DB.log)" >&2; kill $PID; exit 1; fi
  sleep 0.2
done
START=$(date +%s.%N)
echo "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$4\",\"params\":$5}" | websocat --no-close -1 "ws://127.0.0.1:$PORT"
END=$(date +%s.%N)
echo "$(basename $BIN) $4: $(echo "$END - $START" | bc) s"
kill $PID; wait $PID 2>/dev/null || true
