#!/usr/bin/env bash
# The main job end to end on the bundled sample directory: a credstore with
# a fresh certificate, a client logged in with its own credentials, and a
# real Borg backup whose passphrase comes only from `cred item read`.
# Everything it starts or writes is removed when it ends, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. contrib/deps.sh

ensure_commands borg:borgbackup fusermount3:fuse3
cargo build --release --quiet -p borg-collective -p borgd
bin=$root/target/release

work=$(mktemp -d -t borg-collective-demo.XXXXXX)
store_pid=
mount_pid=
cleanup() {
    if [ -n "$mount_pid" ] && kill "$mount_pid" 2>/dev/null; then
        wait "$mount_pid" 2>/dev/null || true
    fi
    if grep -q " $work/mnt " /proc/self/mounts 2>/dev/null; then
        fusermount3 -u -z "$work/mnt" || umount -l "$work/mnt" || true
    fi
    [ -n "$store_pid" ] && kill "$store_pid" 2>/dev/null && wait "$store_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }

say "generating a certificate"
"$bin/credstore" gen-cert --host 127.0.0.1 --host localhost --out "$work/tls" | tee "$work/gen-cert.txt"
fingerprint=$(sed -n 's/^SHA-256 fingerprint: //p' "$work/gen-cert.txt")

say "starting credstore"
mkdir -m 700 "$work/storage"
cat > "$work/credstore.toml" <<TOML
storage_path = "storage"
listen_address = "127.0.0.1:0"

[tls]
cert_file = "tls/cert.pem"
key_file = "tls/key.pem"
TOML
NO_COLOR=1 "$bin/credstore" "$work/credstore.toml" 2> "$work/credstore.log" &
store_pid=$!
for _ in $(seq 100); do
    grep -q listening "$work/credstore.log" && break
    kill -0 "$store_pid" 2>/dev/null || { cat "$work/credstore.log" >&2; exit 1; }
    sleep 0.1
done
port=$(sed -n 's/.*listening address=[^ ]*:\([0-9]*\).*/\1/p' "$work/credstore.log")
[ -n "$port" ] || { cat "$work/credstore.log" >&2; exit 1; }
echo "credstore listens on 127.0.0.1:$port"

admin=(env CRED_PASSPHRASE_FILE="$work/master-passphrase" "$bin/cred" --config-dir "$work/admin")
host=("$bin/cred" --config-dir "$work/host")

say "unlocking the store with a generated master passphrase"
(umask 077; head -c 32 /dev/urandom | base64 > "$work/master-passphrase")
"${admin[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint"
"${admin[@]}" store unlock

say "storing a Borg passphrase"
item=$(head -c 32 /dev/urandom | base64 | "${admin[@]}" item create -d "borg repository of demo host" --value-stdin)
echo "item $item"
"${admin[@]}" item list

say "creating client credentials for the backup host and logging in with them"
client=$("${admin[@]}" client create -d "demo backup host" --grant "$item" --json)
client_id=$(printf '%s' "$client" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
"${host[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint" >/dev/null
printf '%s' "$client" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' |
    "${host[@]}" login --client-id "$client_id" --client-secret-stdin

say "backing up contrib/sample with borg; the passphrase comes from cred item read"
export BORG_PASSCOMMAND="$bin/cred --config-dir $work/host item read $item"
export BORG_BASE_DIR=$work/borg-base
unset BORG_PASSPHRASE BORG_PASSPHRASE_FD
borg init --encryption repokey "$work/repo"
borg create --stats "$work/repo::sample-{now:%Y-%m-%dT%H:%M:%S}" contrib/sample
borg list "$work/repo"

if [ -e /dev/fuse ]; then
    say "mounting the secret as a file with cred mount; borg reads it with cat"
    mkdir "$work/mnt"
    "${host[@]}" mount "$work/mnt" --file "borg/passphrase=$item" > "$work/mount.log" 2>&1 &
    mount_pid=$!
    for _ in $(seq 100); do
        grep -q '^mounted' "$work/mount.log" && break
        kill -0 "$mount_pid" 2>/dev/null || { cat "$work/mount.log" >&2; exit 1; }
        sleep 0.1
    done
    ls -l "$work/mnt/borg"

    say "running the backup through borgd --once, which reads the passphrase from the mount"
    cat > "$work/borgd.toml" <<TOML
state_file = "$work/borgd-state.json"

[repository]
location = "$work/repo"

[encryption]
passphrase_file = "$work/mnt/borg/passphrase"

[[backup]]
name = "demo"
schedule = "15 2 * * *"
paths = ["$root/contrib/sample"]
keep = { daily = 7 }
TOML
    unset BORG_PASSCOMMAND
    "$bin/borgd" check "$work/borgd.toml"
    "$bin/borgd" "$work/borgd.toml" --once
    "$bin/borgd" status "$work/borgd.toml"
    export BORG_PASSCOMMAND="cat $work/mnt/borg/passphrase"
    borg list "$work/repo"
    kill -TERM "$mount_pid"
    wait "$mount_pid"
    mount_pid=
    sed 's/^/  mount log: /' "$work/mount.log"
else
    say "skipping cred mount: /dev/fuse is absent on this machine"
fi

say "done: the passphrase was never written to any config file"
