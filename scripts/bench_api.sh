#!/usr/bin/env bash
# The request API's latency under load (README "Scoring at authorisation
# time"): `streamscore run` (release build) with [serve] on the example
# pipeline and Tansu, its windows filled by the stream from simulated
# history, then oha sending one transaction at each offered rate to
# POST /v1/score. Prints oha's summary (percentiles included) per rate.
#
#   scripts/bench_api.sh                              # 1,000 and 5,000 requests/s, 10 s each
#   scripts/bench_api.sh --rates 1000 --seconds 5 --days 10
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

rates=1000,5000
seconds=10
days=30
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) rates="$2"; shift ;;
        --seconds) seconds="$2"; shift ;;
        --days) days="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

ensure_apt_packages
ensure_toolchain
ensure_tansu
command -v oha >/dev/null || cargo install --locked oha
cargo build --locked --release --bin streamscore
bin="$CARGO_TARGET_DIR/release/streamscore"
start_tansu

work=$(mktemp -d "${TMPDIR:-/tmp}/streamscore-bench-api.XXXXXX")
# Beside the example, so that its relative paths (schema, SQL, model) hold.
pipeline="pipelines/.bench-api-$$.toml"
run_pid=""
cleanup() {
    [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    rm -rf "$work" "$pipeline"
    kill "$TANSU_PID" 2>/dev/null; wait "$TANSU_PID" 2>/dev/null; rm -rf "$TANSU_DIR"
}
trap cleanup EXIT

serve_port=$(free_port)
admin_port=$(free_port)
sed -e 's/^input_topic = .*/input_topic = "bench-api-tx"/' \
    -e 's/^output_topic = .*/output_topic = "bench-api-scores"/' \
    -e 's/^dead_letter_topic = .*/dead_letter_topic = "bench-api-dead-letters"/' \
    -e 's/^alerts_topic = .*/alerts_topic = "bench-api-alerts"/' \
    -e 's/^topic = "transaction-labels"/topic = "bench-api-labels"/' \
    -e 's/^group_id = .*/group_id = "bench-api"/' \
    pipelines/fraud.toml >"$pipeline"
printf '\n[serve]\nlisten = "127.0.0.1:%s"\n' "$serve_port" >>"$pipeline"

for topic in bench-api-scores bench-api-dead-letters bench-api-alerts; do
    tansu topic create --broker "tcp://$TANSU_BROKERS" --partitions 1 "$topic" >/dev/null
done
"$bin" simulate --out "$work/history.ndjson" --days "$days" >/dev/null
"$bin" simulate --to-topic bench-api-tx --labels-topic bench-api-labels \
    --brokers "$TANSU_BROKERS" --days "$days" --partitions 1 --rate 0 >"$work/simulate.log"
# The newest transaction: the API scores it against the whole history.
tail -n 1 "$work/history.ndjson" >"$work/one.json"

"$bin" run --pipeline "$pipeline" --brokers "$TANSU_BROKERS" --state "$work/state" \
    --admin-listen "127.0.0.1:$admin_port" 2>"$work/run.log" &
run_pid=$!
# The history is scored when the count of scored events stops moving.
scored() {
    curl -s "127.0.0.1:$admin_port/metrics" |
        awk '/^streamscore_events_scored_total/ {s += $2} END {print s + 0}'
}
previous=-1
for _ in $(seq 1 600); do
    sleep 3
    now=$(scored)
    if [ "$now" -gt 0 ] && [ "$now" = "$previous" ]; then break; fi
    previous=$now
done
echo "the stream scored $(scored) events of $days days of history; the API now answers from that state"

IFS=, read -ra offered <<<"$rates"
for rate in "${offered[@]}"; do
    echo
    echo "## $rate requests/s for ${seconds}s"
    oha --no-tui -z "${seconds}s" -q "$rate" -m POST \
        -H 'content-type: application/json' -D "$work/one.json" \
        "http://127.0.0.1:$serve_port/v1/score"
done
