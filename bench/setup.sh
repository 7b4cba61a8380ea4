# Sourced by the bench scripts: builds release binaries and starts a
# credstore with a fresh certificate in $work, unlocked, with one item
# ($item, value "borg-passphrase") and a host config logged in as a
# client. Sets bin, work, port, fingerprint, item, store_pid, results and
# the arrays admin and host (cred invocations). Registers cleanup of
# everything on exit. Sourcing it again does nothing, so that run.sh and
# the scripts it sources share one store.
#
# Every measurement appends rows to $results (see table.py); print_table
# prints them as one table.

[ -n "${bench_setup_done:-}" ] && return 0
bench_setup_done=1
# Other work on the machine skews every figure; the table shows how busy it was.
bench_load_start=$(cut -d' ' -f1-3 /proc/loadavg)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/contrib/deps.sh"
ensure_commands hyperfine:hyperfine curl:curl openssl:openssl python3:python3 fusermount3:fuse3 \
    squashfuse:squashfuse mksquashfs:squashfs-tools borg:borgbackup ss:iproute2

# How long each part runs. QUICK=1 makes every part tiny (a smoke run);
# any variable set in the environment wins over both sets.
if [ "${QUICK:-0}" = 1 ]; then
    : "${RUNS:=20}" "${WARMUP:=3}" "${UNLOCK_RUNS:=3}" "${SCALE_RUNS:=5}" "${BORG_RUNS:=2}"
    : "${DURATION:=500ms}" "${LEVELS:=1 8}" "${SCALE_ITEMS:=10 100}"
fi
: "${RUNS:=300}" "${WARMUP:=20}" "${UNLOCK_RUNS:=20}" "${SCALE_RUNS:=30}" "${BORG_RUNS:=10}"
: "${DURATION:=5s}" "${LEVELS:=1 8 32 128}" "${SCALE_ITEMS:=10 1000 10000}"

(cd "$root" && cargo build --release --quiet -p borg-collective -p bench -p borgd)
bin=$root/target/release
# The binaries come from the work tree, which may differ from its commit.
bench_tree=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD -- . ':!bench' 2>/dev/null ||
    bench_tree+=" with uncommitted changes outside bench/"

work=$(mktemp -d -t borg-collective-bench.XXXXXX)
results=$work/results.tsv
: > "$results"
pids=()
temp_files=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # Without a mount left grep fails, which must not stop the clean-up.
    { grep -o " $work/[^ ]*" /proc/self/mounts || true; } |
        while read -r point; do umount -l "$point" || true; done
    rm -rf "$work" "${temp_files[@]}"
}
trap cleanup EXIT

# Waits until FILE contains PATTERN, failing after 10 s.
wait_for() {
    for _ in $(seq 100); do grep -q "$2" "$1" && return 0; sleep 0.1; done
    cat "$1" >&2
    return 1
}

# new_store DIR: a certificate and an empty storage directory in DIR.
new_store() {
    mkdir -p "$1"
    "$bin/credstore" gen-cert --host 127.0.0.1 --out "$1/tls" > "$1/gen-cert.txt"
    mkdir -m 700 "$1/storage"
}

# start_store DIR [PORT]: starts credstore on DIR (on PORT, else a free
# one) and sets store_pid and port. All load generator clients come from
# 127.0.0.1, so one address may hold every one of the 512 connections.
start_store() {
    cat > "$1/credstore.toml" <<TOML
storage_path = "storage"
listen_address = "127.0.0.1:${2:-0}"
max_connections_per_peer = 512

[tls]
cert_file = "tls/cert.pem"
key_file = "tls/key.pem"
TOML
    NO_COLOR=1 RUST_LOG=warn,credstore::server=info "$bin/credstore" "$1/credstore.toml" \
        2> "$1/credstore.log" &
    store_pid=$!
    pids+=("$store_pid")
    wait_for "$1/credstore.log" listening
    port=$(sed -n 's/.*listening address=[^ ]*:\([0-9]*\).*/\1/p' "$1/credstore.log")
}

# stop_process PID: stops a process this script started, and waits for it.
stop_process() {
    kill "$1"
    wait "$1" 2>/dev/null || true
}

# vm_rss PID: the resident memory of a process, in MiB.
vm_rss() {
    awk '/^VmRSS:/ { printf "%.2f", $2 / 1024 }' "/proc/$1/status"
}

# login DIR ITEM: a client granted ITEM, logged in with a cred config in
# DIR pointed at the store on $port. Uses admin.
login() {
    local client client_id
    client=$("${admin[@]}" client create -d bench --grant "$2" --json)
    client_id=$(printf '%s' "$client" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
    "$bin/cred" --config-dir "$1" configure --host 127.0.0.1 --port "$port" \
        --fingerprint "$fingerprint" > /dev/null
    printf '%s' "$client" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' |
        "$bin/cred" --config-dir "$1" login --client-id "$client_id" --client-secret-stdin \
            > /dev/null
}

# timed ARGS...: hyperfine ARGS, quiet unless it fails; its warnings
# about outliers go to $work/hyperfine.log.
timed() {
    hyperfine "$@" >> "$work/hyperfine.log" 2>&1 || {
        tail -20 "$work/hyperfine.log" >&2
        return 1
    }
}

# hyperfine_rows PART BASELINES JSON...: records hyperfine medians.
hyperfine_rows() {
    python3 "$root/bench/table.py" hyperfine "$@" >> "$results"
}

# row PART NAME VALUE UNIT [BASELINES [EXTRAS]]: records one figure;
# BASELINES are row names of the same PART, separated by |.
row() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" "${6:-}" >> "$results"
}

# Prints every recorded row as one table, then the machine.
print_table() {
    python3 "$root/bench/table.py" print "$results"
    printf 'machine: %s cores, %s, Linux %s; load average at start %s, now %s\n' "$(nproc)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(uname -r)" \
        "$bench_load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'built from: %s\n' "$bench_tree"
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp "$work"/*.json "$work"/*.tsv "$KEEP"/ 2>/dev/null || true
    fi
}

new_store "$work"
fingerprint=$(sed -n 's/^SHA-256 fingerprint: //p' "$work/gen-cert.txt")
start_store "$work"

head -c 24 /dev/urandom | base64 > "$work/pass"
admin=("$bin/cred" --config-dir "$work/admin" --passphrase-file "$work/pass")
"${admin[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint" > /dev/null
"${admin[@]}" store unlock > /dev/null
item=$(printf 'borg-passphrase' | "${admin[@]}" item create -d bench --value-stdin)
login "$work/host" "$item"
host=("$bin/cred" --config-dir "$work/host")
[ "$("${host[@]}" item read "$item")" = borg-passphrase ]
