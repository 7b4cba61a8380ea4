#!/usr/bin/env bash
# The benchmark: builds release binaries, starts a credstore with a fresh
# certificate, runs every part and prints one table, each figure next to
# its ratio against a baseline measured in the same run.
#
#   read     cred item read vs a bare rustls request and curl; unlock
#   mount    cat on a cred mount vs /dev/shm and a plain FUSE filesystem
#   load     credstore-load throughput and latency vs the Info floor
#   scale    unlock, memory, item list and read at each item count
#   borgd    borgd --once vs the same borg create by hand
#
# Shorten with RUNS, WARMUP, UNLOCK_RUNS, SCALE_RUNS, BORG_RUNS, DURATION
# (per load level, such as 2s), LEVELS (such as "1 8"), SCALE_ITEMS (such as
# "10 1000"), or QUICK=1 for a smoke run of every part. KEEP=DIR keeps the
# raw hyperfine and load files.
set -euo pipefail
started=$SECONDS
here=$(cd "$(dirname "$0")" && pwd)
. "$here/setup.sh"
. "$here/read-latency.sh"
. "$here/mount-latency.sh"
. "$here/load.sh"
. "$here/scale.sh"
. "$here/borgd-overhead.sh"

read_latency
mount_latency
load_throughput
borgd_overhead
scale_items

print_table
printf 'settings: RUNS=%s UNLOCK_RUNS=%s SCALE_RUNS=%s BORG_RUNS=%s DURATION=%s' \
    "$RUNS" "$UNLOCK_RUNS" "$SCALE_RUNS" "$BORG_RUNS" "$DURATION"
printf ' LEVELS="%s" SCALE_ITEMS="%s"; took %s s\n' "$LEVELS" "$SCALE_ITEMS" \
    "$((SECONDS - started))"
if [ "$load_errors" != 0 ]; then
    echo "run.sh: the load generator saw failed requests; see above" >&2
    exit 1
fi
