#!/usr/bin/env bash
# The end-to-end benchmark: a bare Rust passthrough and `streamscore run`
# over the same simulated events on a real broker, then the Kafka-to-score
# latency at offered loads. Prints Markdown; --record appends it, with the
# command, commit and machine, to bench/RESULTS.md.
#
#   scripts/bench.sh                          # Tansu started here, 1,000,000 events
#   scripts/bench.sh --brokers kafka-1:9092   # your cluster
#   scripts/bench.sh --events 100000 --loads 5000,20000 --seconds 5
#   scripts/bench.sh --debug ...              # debug build (CI's smoke run)
#
# Other arguments go to `streamscore bench` (see `streamscore bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

profile=release
brokers=""
record=no
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug ;;
        --record) record=yes ;;
        --brokers) brokers="$2"; shift ;;
        *) args+=("$1") ;;
    esac
    shift
done

ensure_apt_packages
ensure_toolchain
if [ "$profile" = release ]; then
    cargo build --locked --release --bin streamscore --example passthrough
else
    cargo build --locked --bin streamscore --example passthrough
fi
if [ -z "$brokers" ]; then
    ensure_tansu
    start_tansu
    brokers="$TANSU_BROKERS"
    broker_note="Tansu $(tansu --version 2>/dev/null | awk '{print $2}') with SQLite storage, on this machine"
else
    broker_note="$brokers"
fi

out=$(mktemp)
"$CARGO_TARGET_DIR/$profile/streamscore" bench --brokers "$brokers" \
    --passthrough "$CARGO_TARGET_DIR/$profile/examples/passthrough" "${args[@]}" | tee "$out"

if [ "$record" = yes ]; then
    {
        echo
        echo "## $(date -u +%Y-%m-%d) · commit $(git rev-parse --short HEAD)"
        echo
        echo "- Command: \`scripts/bench.sh ${args[*]}\` ($profile build)"
        echo "- Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem/{print $2}') GiB"
        echo "- Broker: $broker_note"
        echo
        cat "$out"
    } >> bench/RESULTS.md
    echo "appended to bench/RESULTS.md"
fi
rm -f "$out"
