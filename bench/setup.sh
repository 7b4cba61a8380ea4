# Sourced by the bench scripts: builds release binaries and starts a
# credstore with a fresh certificate in $work, unlocked, with one item
# ($item, value "borg-passphrase") and a host config logged in as a
# client. Sets bin, work, port, fingerprint, item, and the arrays admin
# and host (cred invocations). Registers cleanup of everything on exit.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/contrib/deps.sh"
ensure_commands hyperfine:hyperfine curl:curl openssl:openssl python3:python3 fusermount3:fuse3

(cd "$root" && cargo build --release --quiet --bin credstore --bin cred -p borg-collective -p bench)
bin=$root/target/release

work=$(mktemp -d -t borg-collective-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    grep -o " $work/[^ ]*" /proc/self/mounts | while read -r point; do umount -l "$point"; done
    rm -rf "$work"
}
trap cleanup EXIT

# Waits until FILE contains PATTERN, failing after 10 s.
wait_for() {
    for _ in $(seq 100); do grep -q "$2" "$1" && return 0; sleep 0.1; done
    cat "$1" >&2
    return 1
}

"$bin/credstore" gen-cert --host 127.0.0.1 --out "$work/tls" > "$work/gen-cert.txt"
fingerprint=$(sed -n 's/^SHA-256 fingerprint: //p' "$work/gen-cert.txt")
mkdir -m 700 "$work/storage"
printf 'storage_path = "storage"\nlisten_address = "127.0.0.1:0"\n[tls]\ncert_file = "tls/cert.pem"\nkey_file = "tls/key.pem"\n' \
    > "$work/credstore.toml"
NO_COLOR=1 RUST_LOG=warn,credstore::server=info "$bin/credstore" "$work/credstore.toml" 2> "$work/credstore.log" &
pids+=($!)
wait_for "$work/credstore.log" listening
port=$(sed -n 's/.*listening address=[^ ]*:\([0-9]*\).*/\1/p' "$work/credstore.log")

head -c 24 /dev/urandom | base64 > "$work/pass"
admin=("$bin/cred" --config-dir "$work/admin" --passphrase-file "$work/pass")
"${admin[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint" > /dev/null
"${admin[@]}" store unlock > /dev/null
item=$(printf 'borg-passphrase' | "${admin[@]}" item create -d bench --value-stdin)
client=$("${admin[@]}" client create -d bench --grant "$item" --json)
client_id=$(printf '%s' "$client" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
host=("$bin/cred" --config-dir "$work/host")
"${host[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint" > /dev/null
printf '%s' "$client" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' |
    "${host[@]}" login --client-id "$client_id" --client-secret-stdin > /dev/null
[ "$("${host[@]}" item read "$item")" = borg-passphrase ]

# Prints median and ratios from hyperfine JSON files; the first name given
# in BASELINE is the one every row is divided by.
report() {
    python3 - "$@" <<'PY'
import json, os, sys
rows = [r for path in sys.argv[1:] for r in json.load(open(path))["results"]]
median = {r["command"]: r["median"] * 1000 for r in rows}
baselines = os.environ["BASELINE"].split(",")
print(f"{'command':<28} {'median ms':>10}" + "".join(f" {'vs ' + b:>24}" for b in baselines))
for name, ms in median.items():
    print(f"{name:<28} {ms:>10.3f}" + "".join(f" {ms / median[b]:>23.2f}x" for b in baselines))
PY
    nproc | xargs printf 'machine: %s cores, '
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs
}
