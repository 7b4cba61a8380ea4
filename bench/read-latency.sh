#!/usr/bin/env bash
# Times `cred item read` against its floors in one hyperfine run:
#   true                   process spawn
#   rustls-one-request     connect + TLS 1.3 handshake + one frame, nothing else
#   curl -sk               the same against `openssl s_server -www`
# and the unlock time (argon2id, the vault's fixed parameters).
# Prints medians and ratios; the raw hyperfine JSON stays in $OUT (default
# a temporary directory that is removed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. contrib/deps.sh
ensure_commands hyperfine:hyperfine curl:curl openssl:openssl python3:python3

cargo build --release --quiet --bin credstore --bin cred -p borg-collective -p bench
bin=$root/target/release

work=$(mktemp -d -t borg-collective-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/credstore" gen-cert --host 127.0.0.1 --out "$work/tls" > "$work/gen-cert.txt"
fingerprint=$(sed -n 's/^SHA-256 fingerprint: //p' "$work/gen-cert.txt")
mkdir -m 700 "$work/storage"
printf 'storage_path = "storage"\nlisten_address = "127.0.0.1:0"\n[tls]\ncert_file = "tls/cert.pem"\nkey_file = "tls/key.pem"\n' > "$work/credstore.toml"
NO_COLOR=1 RUST_LOG=warn,credstore::server=info "$bin/credstore" "$work/credstore.toml" 2> "$work/credstore.log" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/credstore.log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening address=[^ ]*:\([0-9]*\).*/\1/p' "$work/credstore.log")

openssl s_server -quiet -www -tls1_3 -accept 0 -cert "$work/tls/cert.pem" -key "$work/tls/key.pem" \
    > "$work/s_server.log" 2>&1 < /dev/null &
pids+=($!)
sleep 0.5
ssl_port=$(ss -Hltnp | awk -v pid="${pids[1]}" '$0 ~ "pid=" pid "," {split($4, a, ":"); print a[length(a)]; exit}')

head -c 24 /dev/urandom | base64 > "$work/pass"
admin=("$bin/cred" --config-dir "$work/admin" --passphrase-file "$work/pass")
"${admin[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint" > /dev/null
"${admin[@]}" store unlock > /dev/null
item=$(printf 'borg-passphrase' | "${admin[@]}" item create -d bench --value-stdin)
client=$("${admin[@]}" client create -d bench --json)
id=$(printf '%s' "$client" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
host=("$bin/cred" --config-dir "$work/host")
"${host[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint" > /dev/null
printf '%s' "$client" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' |
    "${host[@]}" login --client-id "$id" --client-secret-stdin > /dev/null
[ "$("${host[@]}" item read "$item")" = borg-passphrase ]

out=${OUT:-$work}
hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$out/read.json" \
    -n true true \
    -n rustls-one-request "$bin/rustls-one-request 127.0.0.1:$port" \
    -n curl "curl -sk -o /dev/null https://127.0.0.1:$ssl_port/" \
    -n "cred item read" "${host[*]} item read $item" > /dev/null
hyperfine -N --runs "${UNLOCK_RUNS:-20}" --export-json "$out/unlock.json" \
    --prepare "${admin[*]} store lock" \
    -n "cred store unlock" "${admin[*]} store unlock" > /dev/null

python3 - "$out/read.json" "$out/unlock.json" <<'PY'
import json, sys
rows = [r for path in sys.argv[1:] for r in json.load(open(path))["results"]]
median = {r["command"]: r["median"] * 1000 for r in rows}
floor = median["rustls-one-request"]
print(f"{'command':<22} {'median ms':>10} {'vs rustls-one-request':>22} {'vs curl':>8}")
for name, ms in median.items():
    print(f"{name:<22} {ms:>10.2f} {ms / floor:>21.2f}x {ms / median['curl']:>7.2f}x")
PY
nproc | xargs printf 'machine: %s cores, '; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs
