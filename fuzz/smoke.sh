#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) over its committed corpus
# and fails on the first crash. Needs the nightly toolchain; installs
# cargo-fuzz from crates.io when it is missing.
#
#   fuzz/smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}

if ! rustup run nightly rustc --version > /dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
command -v cargo-fuzz > /dev/null || cargo install --quiet --locked cargo-fuzz
fuzz() { rustup run nightly cargo fuzz "$@"; }

fuzz build -O
new=$(mktemp -d -t borg-collective-fuzz.XXXXXX)
trap 'rm -rf "$new"' EXIT
for target in $(fuzz list); do
    mkdir -p "corpus/$target" "$new/$target"
    # New inputs go to a scratch directory, so the committed corpus stays
    # as minimised. Leak detection is off, in libFuzzer and at exit:
    # LeakSanitizer reads every mapped page and faults on the guard pages
    # around locked secrets.
    if ! ASAN_OPTIONS=detect_leaks=0 fuzz run -O "$target" "$new/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -detect_leaks=0 -print_final_stats=1 \
        > "$new/$target.log" 2>&1; then
        tail -n 60 "$new/$target.log" >&2
        echo "fuzz: $target failed; the input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$new/$target.log")
    echo "fuzz: $target ran $runs inputs in ${seconds}s without a crash"
done
