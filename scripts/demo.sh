#!/usr/bin/env bash
# The whole loop on this machine, no external service: an embedded broker,
# simulated transactions, a model trained on the spot, live scoring.
# Extra arguments go to `streamscore demo` (try --events 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_apt_packages
ensure_toolchain
# The debug build is the one the tests share, and it scores fast enough
# for a demo; use `cargo run --release -- demo` for throughput figures.
cargo run --locked -- demo "$@"
