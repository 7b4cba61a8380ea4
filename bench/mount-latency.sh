#!/usr/bin/env bash
# Times `cat` of a secret on a `cred mount` against `cat` of the same bytes
# on /dev/shm, in one hyperfine run: cached (the value is held, no fetch)
# and uncached (a TTL of 0, so every open fetches from the store).
set -euo pipefail
. "$(dirname "$0")/setup.sh"

shm=$(mktemp -p /dev/shm bench-secret.XXXXXX)
printf 'borg-passphrase' > "$shm"
trap 'rm -f "$shm"; cleanup' EXIT

mkdir "$work/mnt"
printf '[[file]]\nname = "cached"\nitem = "%s"\nttl = 3600\n\n[[file]]\nname = "uncached"\nitem = "%s"\nttl = 0\n' \
    "$item" "$item" > "$work/map.toml"
"${host[@]}" mount "$work/mnt" --map "$work/map.toml" > "$work/mount.log" 2>&1 &
pids+=($!)
wait_for "$work/mount.log" '^mounted'
[ "$(cat "$work/mnt/cached")" = borg-passphrase ]

hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$work/mount.json" \
    -n "cat /dev/shm" "cat $shm" \
    -n "cat mount (cached)" "cat $work/mnt/cached" \
    -n "cat mount (uncached)" "cat $work/mnt/uncached" \
    -n "cred item read" "${host[*]} item read $item" > /dev/null

BASELINE="cat /dev/shm" report "$work/mount.json"
