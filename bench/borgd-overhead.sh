#!/usr/bin/env bash
# What borgd adds to a backup: `borgd --once` of a few MB of random files
# into a repokey repository, its passphrase from the store through a
# passcommand (`cred item read`), against the same `borg create` run by
# hand with BORG_PASSPHRASE set, and by hand with the same passcommand.
# Before every timed run the archive of the run before is deleted, so
# every run stores the same data anew under a new archive name.
# Runs alone, or sourced by run.sh, which calls borgd_overhead.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# borgd_files DIR: 40 files of 100 kB and one of 1 MiB, incompressible.
borgd_files() {
    mkdir -p "$1"
    for n in $(seq 40); do head -c 100000 /dev/urandom > "$1/file-$n"; done
    head -c 1048576 /dev/urandom > "$1/big"
}

# borgd_config DIR PASSCOMMAND: a borgd config of one backup of DIR/data.
borgd_config() {
    cat > "$1/borgd.toml" <<TOML
state_file = "$1/borgd-state.json"

[repository]
location = "$1/repo"

[encryption]
passcommand = "$2"

[[backup]]
name = "bench"
schedule = "0 0 1 1 *"
paths = ["$1/data"]
TOML
}

borgd_overhead() {
    local dir=$work/borg passcommand create delete
    passcommand="${host[*]} item read $item"
    borgd_files "$dir/data"
    borgd_config "$dir" "$passcommand"
    # borgd passes its environment on to borg, minus any passphrase.
    export BORG_BASE_DIR=$dir/base BORG_EXIT_CODES=modern
    BORG_PASSPHRASE=borg-passphrase borg init --encryption repokey "$dir/repo" \
        > "$dir/init.log" 2>&1 || { cat "$dir/init.log" >&2; return 1; }
    "$bin/borgd" check "$dir/borgd.toml" > /dev/null

    # The arguments borgd gives borg create, and the archive name it picks.
    create="--log-json --lock-wait 60 create --json"
    create+=" '$dir/repo::bench-{now:%Y-%m-%dT%H:%M:%S}' '$dir/data'"
    delete="borg delete --glob-archives 'bench-*' '$dir/repo'"
    # One untimed backup fills borg's caches, and leaves an archive for the
    # first prepare step to delete.
    eval "BORG_PASSPHRASE=borg-passphrase borg $create" > /dev/null
    BORG_PASSPHRASE=borg-passphrase timed --runs "$BORG_RUNS" --prepare "$delete" \
        --export-json "$work/borgd.json" \
        -n "borg create, BORG_PASSPHRASE" "borg $create" \
        -n "borg create, BORG_PASSCOMMAND=cred item read" \
        "env -u BORG_PASSPHRASE BORG_PASSCOMMAND='$passcommand' borg $create" \
        -n "borgd --once, passcommand cred item read" "$bin/borgd '$dir/borgd.toml' --once"
    unset BORG_BASE_DIR BORG_EXIT_CODES
    hyperfine_rows borgd "borg create, BORG_PASSPHRASE" "$work/borgd.json"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    borgd_overhead
    print_table
fi
