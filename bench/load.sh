#!/usr/bin/env bash
# Throughput and latency under concurrent clients: credstore-load at each
# of $LEVELS clients for $DURATION, on persistent connections and with a
# new connection per request. Each item-read row is divided by an info row
# at the same level and mode, the protocol floor (TLS, a sealed frame, the
# server's request path, no credentials and no vault work), measured in
# the same run right before it. Fails if any request failed.
# Runs alone, or sourced by run.sh, which calls load_throughput.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# Set when a request failed; run.sh still prints the table, then fails.
load_errors=0

load_throughput() {
    local status=0
    "$bin/credstore-load" --config-dir "$work/host" --item "$item" \
        --concurrency "$(printf '%s' "$LEVELS" | tr ' ' ',')" --duration "$DURATION" \
        --mode persistent,reconnect --operation info,read --tsv \
        > "$work/load.tsv" 2> "$work/load.err" || status=$?
    python3 "$root/bench/table.py" load "$work/load.tsv" >> "$results"
    if [ "$status" -ne 0 ]; then
        load_errors=1
        echo "LOAD GENERATOR FAILED (exit $status):" >&2
        cat "$work/load.err" >&2
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    load_throughput
    print_table
    [ "$load_errors" = 0 ] || exit 1
fi
