#!/usr/bin/env bash
# Resident memory (MiB) of the server binary BIN, sampled every 2 s for 30 s, while clients that
# never read an answer send malformed frames as fast as they can and then keep their
# connections open (`authstore-tools burst --never-read`):
#   scripts/stall-rss.sh LABEL BIN [burst args...]
set -u
label=$1 bin=$2
shift 2
tools="${TOOLS:-$(dirname "$bin")/authstore-tools}"
# shellcheck disable=SC2016
"$(dirname "$0")/with-server.sh" "$bin" bash -c 'rss() { echo $(( $(ps -o rss= -p "$SERVER_PID") / 1024 )); }
    "$0" burst --url "$SERVER_URL" --never-read --hold-secs 20 "${@:2}" &
    burst=$!
    samples=""
    for _ in $(seq 15); do sleep 2; samples="$samples $(rss)"; done
    wait $burst
    echo "| $1 |$samples |"' "$tools" "$label" "$@"
