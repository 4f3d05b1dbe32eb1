#!/usr/bin/env bash
# How long a partition's state takes to restore from its changelog (README
# "Running several instances"): examples/restore.rs writes N cards' window
# state (two keys a card) to a fresh changelog topic on Tansu through the
# checkpoint's append path, then restores it into an empty RocksDB as an
# instance does when the partition is assigned to it. Prints the records,
# bytes and seconds of both.
#
#   scripts/bench_restore.sh                    # 1,000,000 cards
#   scripts/bench_restore.sh --cards 100000 --value-bytes 400
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_apt_packages
ensure_toolchain
ensure_tansu
cargo build --locked --release --example restore
start_tansu
/usr/bin/time -f "%e s wall, %U s user, %S s system, %M KB peak memory" \
    "$CARGO_TARGET_DIR/release/examples/restore" --brokers "$TANSU_BROKERS" "$@"
