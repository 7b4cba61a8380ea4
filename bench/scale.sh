#!/usr/bin/env bash
# How the store grows with its item count, on a second credstore of its
# own: for each count in $SCALE_ITEMS it fills the store up to that many
# items (credstore-fill, one connection), restarts the daemon so that its
# memory is measured fresh, then records VmRSS locked, after one unlock
# and after the timed runs, the unlock time (hyperfine, locked before each
# run) and the time of `cred item list` (all items) and `cred item read`.
# Every row is divided by the same figure at the smallest count.
# Runs alone, or sourced by run.sh, which calls scale_items.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

scale_items() {
    # These shadow the first store's for start_store and login, which
    # read and set them.
    local port fingerprint store_pid admin host
    local dir=$work/scale have=1 counts n scale_port first base
    counts=$(printf '%s\n' $SCALE_ITEMS | sort -n | uniq)
    base="$(printf '%s\n' $counts | head -1) items"

    new_store "$dir"
    fingerprint=$(sed -n 's/^SHA-256 fingerprint: //p' "$dir/gen-cert.txt")
    start_store "$dir"
    scale_port=$port
    admin=("$bin/cred" --config-dir "$dir/admin" --passphrase-file "$work/pass")
    "${admin[@]}" configure --host 127.0.0.1 --port "$port" --fingerprint "$fingerprint" \
        > /dev/null
    "${admin[@]}" store unlock > /dev/null
    first=$(printf 'scale' | "${admin[@]}" item create -d "bench item first" --value-stdin)
    login "$dir/host" "$first"
    host=("$bin/cred" --config-dir "$dir/host")

    for n in $counts; do
        fill_to "$dir" "$have" "$n" "$base"
        have=$n
        stop_process "$store_pid"
        start_store "$dir" "$scale_port"
        scale_at "$n" "$base" "$first"
    done
    hyperfine_rows "scale: cred store unlock" "$base" $(scale_files unlock "$counts")
    hyperfine_rows "scale: cred item list" "$base" $(scale_files list "$counts")
    hyperfine_rows "scale: cred item read" "$base" $(scale_files read "$counts")
}

# scale_files WHAT COUNTS: the hyperfine files of one figure, by count.
scale_files() {
    for n in $2; do printf '%s ' "$work/scale-$1-$n.json"; done
}

# fill_to DIR HAVE WANT BASE: creates the items from HAVE up to WANT.
fill_to() {
    local seconds
    [ "$3" -gt "$2" ] || return 0
    seconds=$("$bin/credstore-fill" --config-dir "$1/admin" --passphrase-file "$work/pass" \
        --first "$2" --count $(($3 - $2)) | sed -n 's/^created .* in \([0-9.]*\) s$/\1/p')
    row "scale: item create, one connection" "$3 items" \
        "$(python3 -c "print($seconds * 1000 / ($3 - $2))")" ms "$4"
}

# scale_at N BASE ITEM: the figures of a freshly started store of N items.
scale_at() {
    local name="$1 items"
    row "scale: VmRSS at start (locked)" "$name" "$(vm_rss "$store_pid")" MiB "$2"
    "${admin[@]}" store unlock > /dev/null
    row "scale: VmRSS after one unlock" "$name" "$(vm_rss "$store_pid")" MiB "$2"
    timed -N --runs "$UNLOCK_RUNS" --export-json "$work/scale-unlock-$1.json" \
        --prepare "${admin[*]} store lock" -n "$name" "${admin[*]} store unlock"
    timed -N --warmup 2 --runs "$SCALE_RUNS" --export-json "$work/scale-list-$1.json" \
        -n "$name" "${admin[*]} item list"
    timed -N --warmup 2 --runs "$SCALE_RUNS" --export-json "$work/scale-read-$1.json" \
        -n "$name" "${host[*]} item read $3"
    row "scale: VmRSS after the timed runs" "$name" "$(vm_rss "$store_pid")" MiB "$2"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    scale_items
    print_table
fi
