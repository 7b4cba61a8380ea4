#!/usr/bin/env bash
# Installs what the test suite needs (as root, with apt-get) and runs it.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
. contrib/deps.sh

ensure_commands "${TEST_COMMANDS[@]}"
# As root everything the tests need is here, so a test that would skip
# (no FUSE, no network namespaces, no tmpfs) fails instead.
if [ "$(id -u)" = 0 ]; then
    export BORG_COLLECTIVE_REQUIRE_ALL=1
fi
exec cargo test --workspace --all-targets "$@"
