#!/usr/bin/env bash
# Times `cat` of a secret on a `cred mount` against `cat` of the same bytes
# on /dev/shm and on a plain FUSE filesystem (squashfuse, the floor any
# FUSE file pays: a trip through the kernel to a userspace daemon), in one
# hyperfine run: cached (the value is held, no fetch) and uncached (a TTL
# of 0, so every open fetches from the store).
# Runs alone, or sourced by run.sh, which calls mount_latency.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# mount_squashfs DIR: a squashfuse mount of a one-file image at DIR/mnt.
mount_squashfs() {
    mkdir -p "$1/src" "$1/mnt"
    printf 'borg-passphrase' > "$1/src/secret"
    mksquashfs "$1/src" "$1/secret.sqfs" -quiet -noappend > /dev/null
    squashfuse -f "$1/secret.sqfs" "$1/mnt" &
    pids+=($!)
    for _ in $(seq 100); do
        [ "$(cat "$1/mnt/secret" 2>/dev/null)" = borg-passphrase ] && return 0
        sleep 0.1
    done
    echo "squashfuse did not mount $1/mnt" >&2
    return 1
}

mount_latency() {
    local shm
    shm=$(mktemp -p /dev/shm bench-secret.XXXXXX)
    temp_files+=("$shm")
    printf 'borg-passphrase' > "$shm"
    mount_squashfs "$work/squashfs"

    mkdir "$work/mnt"
    printf '[[file]]\nname = "cached"\nitem = "%s"\nttl = 3600\n\n' "$item" > "$work/map.toml"
    printf '[[file]]\nname = "uncached"\nitem = "%s"\nttl = 0\n' "$item" >> "$work/map.toml"
    "${host[@]}" mount "$work/mnt" --map "$work/map.toml" > "$work/mount.log" 2>&1 &
    pids+=($!)
    wait_for "$work/mount.log" '^mounted'
    [ "$(cat "$work/mnt/cached")" = borg-passphrase ]

    timed -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/mount.json" \
        -n "cat /dev/shm" "cat $shm" \
        -n "cat squashfuse" "cat $work/squashfs/mnt/secret" \
        -n "cat mount (cached)" "cat $work/mnt/cached" \
        -n "cat mount (uncached)" "cat $work/mnt/uncached" \
        -n "cred item read" "${host[*]} item read $item"
    hyperfine_rows mount "cat /dev/shm|cat squashfuse" "$work/mount.json"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    mount_latency
    print_table
fi
