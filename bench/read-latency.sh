#!/usr/bin/env bash
# Times `cred item read` against its floors in one hyperfine run:
#   true                   process spawn
#   rustls-one-request     connect + TLS 1.3 handshake + one frame, nothing else
#   curl -sk               the same against `openssl s_server -www`
# and the unlock time (argon2id with the vault's fixed parameters).
# Runs alone, or sourced by run.sh, which calls read_latency.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

read_latency() {
    local ssl_pid ssl_port
    openssl s_server -quiet -www -tls1_3 -accept 0 \
        -cert "$work/tls/cert.pem" -key "$work/tls/key.pem" \
        > "$work/s_server.log" 2>&1 < /dev/null &
    ssl_pid=$!
    pids+=("$ssl_pid")
    sleep 0.5
    ssl_port=$(ss -Hltnp | awk -v pid="$ssl_pid" \
        '$0 ~ "pid=" pid "," {n = split($4, a, ":"); print a[n]; exit}')

    timed -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/read.json" \
        -n true true \
        -n rustls-one-request "$bin/rustls-one-request 127.0.0.1:$port" \
        -n curl "curl -sk -o /dev/null https://127.0.0.1:$ssl_port/" \
        -n "cred item read" "${host[*]} item read $item"
    timed -N --runs "$UNLOCK_RUNS" --export-json "$work/unlock.json" \
        --prepare "${admin[*]} store lock" \
        -n "cred store unlock" "${admin[*]} store unlock"
    stop_process "$ssl_pid"
    hyperfine_rows read "rustls-one-request|curl" "$work/read.json" "$work/unlock.json"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    read_latency
    print_table
fi
