#!/usr/bin/env bash
# One A/B step: `authstore-tools bench` with ARGS against the server binary BIN on a fresh
# SurrealKV directory; prints the table and the server's resident memory. Interleave the
# variants (A B B A) to spread the machine's noise:
#   scripts/ab.sh LABEL BIN [bench args...]
# TOOLS (default: authstore-tools next to BIN) and PORT may be set.
set -u
label=$1 bin=$2
shift 2
tools="${TOOLS:-$(dirname "$bin")/authstore-tools}"
echo "== $label: $*"
# shellcheck disable=SC2016
"$(dirname "$0")/with-server.sh" "$bin" bash -c '"$0" bench --url "$SERVER_URL" "${@:2}" 2>/dev/null
    echo "rss_kib $1 $(ps -o rss= -p "$SERVER_PID")"' "$tools" "$label" "$@"
