#!/usr/bin/env bash
# Every check CI runs: set-up, fmt, clippy, and all tests, the integration
# tests against a real Kafka-protocol broker (Tansu) started here.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_apt_packages "${TEST_APT_PACKAGES[@]}"
ensure_toolchain
ensure_tansu

cargo fmt --all -- --check
docker-compose -f docker-compose.yml config -q
cargo clippy --locked --all-targets -- -D warnings
# Build everything before the broker starts, so its start-up is not timed
# against a cold compile.
cargo test --locked --no-run

start_tansu
STREAMSCORE_TEST_BROKERS="$TANSU_BROKERS" cargo test --locked -- "$@"

# The end-to-end benchmark, small, so that it cannot rot; its figures come
# from full runs (scripts/bench.sh, bench/RESULTS.md).
if [ $# -eq 0 ]; then
    scripts/bench.sh --debug --brokers "$TANSU_BROKERS" --events 3000 --loads 1000,max --seconds 2 \
    --min-drift-windows 1
fi
