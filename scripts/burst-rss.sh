#!/usr/bin/env bash
# Resident memory (MiB) of the server binary BIN before, right after, and 20 s after a burst of
# 500 000 malformed frames over 8 connections (`authstore-tools burst`):
#   scripts/burst-rss.sh LABEL BIN [burst args...]     e.g. --window 1000000: never wait for answers
set -u
label=$1 bin=$2
shift 2
tools="${TOOLS:-$(dirname "$bin")/authstore-tools}"
# shellcheck disable=SC2016
"$(dirname "$0")/with-server.sh" "$bin" bash -c 'rss() { echo $(( $(ps -o rss= -p "$SERVER_PID") / 1024 )); }
    sleep 1; before=$(rss)
    "$0" burst --url "$SERVER_URL" --connections 8 --frames 500000 "${@:2}"; after=$(rss)
    sleep 20; echo "| $1 | $before | $after | $(rss) |"' "$tools" "$label" "$@"
