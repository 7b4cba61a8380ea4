#!/usr/bin/env bash
# Installs what the test suite needs (as root, with apt-get) and runs it.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
. contrib/deps.sh

ensure_commands "${TEST_COMMANDS[@]}"
exec cargo test --workspace --all-targets "$@"
