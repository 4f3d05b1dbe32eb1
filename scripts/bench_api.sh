#!/usr/bin/env bash
# The request API under load (README "Scoring at authorisation time" and
# Benchmarks, "The request API"): `streamscore run` (release build) with
# [serve] on the example pipeline and Tansu, its windows filled by the
# stream from simulated history, then oha sending one transaction at each
# offered rate to POST /v1/score. Prints oha's summary per rate.
#
#   scripts/bench_api.sh                              # 1,000 and 5,000 requests/s, 10 s each
#   scripts/bench_api.sh --rates 1000 --seconds 5 --days 10
#   scripts/bench_api.sh --during-backlog 1000        # the stream's backlog, without and with API load
#   scripts/bench_api.sh --forwarded                  # two instances: the holder against a hop
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

rates=1000,5000
seconds=10
days=30
mode=latency
backlog_rate=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) rates="$2"; shift ;;
        --seconds) seconds="$2"; shift ;;
        --days) days="$2"; shift ;;
        --during-backlog) mode=backlog; backlog_rate="$2"; shift ;;
        --forwarded) mode=forwarded ;;
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
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    rm -rf "$work" pipelines/.bench-api-$$*.toml
    kill "$TANSU_PID" 2>/dev/null; wait "$TANSU_PID" 2>/dev/null; rm -rf "$TANSU_DIR"
}
trap cleanup EXIT

partitions=1
[ "$mode" = forwarded ] && partitions=2
sed -e 's/^input_topic = .*/input_topic = "bench-api-tx"/' \
    -e 's/^output_topic = .*/output_topic = "bench-api-scores"/' \
    -e 's/^dead_letter_topic = .*/dead_letter_topic = "bench-api-dead-letters"/' \
    -e 's/^alerts_topic = .*/alerts_topic = "bench-api-alerts"/' \
    -e 's/^topic = "transaction-labels"/topic = "bench-api-labels"/' \
    pipelines/fraud.toml >"$pipeline"
if [ "$mode" = forwarded ]; then
    # Windows per partition, with the changelog that says who holds which.
    sed -i -e 's/^checkpoint_ms = \(.*\)/checkpoint_ms = \1\nchangelog = true/' \
        -e 's/^scope = "instance"/scope = "partition"\npartition_key = "card_id"/' "$pipeline"
fi

for topic in bench-api-scores bench-api-dead-letters bench-api-alerts; do
    tansu topic create --broker "tcp://$TANSU_BROKERS" --partitions "$partitions" "$topic" >/dev/null
done
"$bin" simulate --out "$work/history.ndjson" --days "$days" >/dev/null
"$bin" simulate --to-topic bench-api-tx --labels-topic bench-api-labels \
    --brokers "$TANSU_BROKERS" --days "$days" --partitions "$partitions" --rate 0 >"$work/simulate.log"
events=$(wc -l <"$work/history.ndjson")
# The newest transaction: the API scores it against the whole history.
tail -n 1 "$work/history.ndjson" >"$work/one.json"

# start NAME GROUP: an instance with its own state, API and admin ports;
# sets serve_port and admin_port.
start() {
    local name=$1 group=$2 file="pipelines/.bench-api-$$-$1.toml"
    serve_port=$(free_port)
    admin_port=$(free_port)
    sed -e "s/^group_id = .*/group_id = \"$group\"/" "$pipeline" >"$file"
    printf '\n[serve]\nlisten = "127.0.0.1:%s"\n' "$serve_port" >>"$file"
    "$bin" run --pipeline "$file" --brokers "$TANSU_BROKERS" --state "$work/state-$name" \
        --admin-listen "127.0.0.1:$admin_port" 2>"$work/$name.log" &
    pids+=($!)
}

# scored PORT: the events an instance has scored.
scored() {
    curl -s "127.0.0.1:$1/metrics" |
        awk '/^streamscore_events_scored_total/ {s += $2} END {print s + 0}'
}

# wait_scored PORT COUNT: seconds (to 0.1 s) until the instance has
# scored COUNT events.
wait_scored() {
    local started
    started=$(date +%s.%N)
    until [ "$(scored "$1")" -ge "$2" ]; do sleep 0.1; done
    awk -v now="$(date +%s.%N)" -v then="$started" 'BEGIN { printf "%.1f", now - then }'
}

# load PORT RATE SECONDS: oha's summary of one transaction at RATE/s.
load() {
    oha --no-tui -z "${3}s" -q "$2" -m POST \
        -H 'content-type: application/json' -D "$work/one.json" \
        "http://127.0.0.1:$1/v1/score"
}

case "$mode" in
latency)
    start a bench-api
    wait_scored "$admin_port" "$events" >/dev/null
    echo "the stream scored $(scored "$admin_port") events of $days days of history; the API now answers from that state"
    IFS=, read -ra offered <<<"$rates"
    for rate in "${offered[@]}"; do
        echo
        echo "## $rate requests/s for ${seconds}s"
        load "$serve_port" "$rate" "$seconds"
    done
    ;;
backlog)
    # The same backlog twice, each by a fresh group and state: alone, then
    # with the API answering $backlog_rate requests/s meanwhile.
    start alone bench-api-alone
    alone=$(wait_scored "$admin_port" "$events")
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
    echo "## the stream alone: $events events of backlog scored in ${alone} s"
    start loaded bench-api-loaded
    until curl -s -o /dev/null -w '%{http_code}' -XPOST -d @"$work/one.json" \
        "127.0.0.1:$serve_port/v1/score" | grep -q 200; do sleep 0.2; done
    # As long as the backlog took alone: the latencies are those of the
    # backlog's time.
    load "$serve_port" "$backlog_rate" "$(printf '%.0f' "$alone")" >"$work/oha.txt" &
    oha_pid=$!
    loaded=$(wait_scored "$admin_port" "$events")
    echo "## the stream with the API at $backlog_rate requests/s: $events events scored in ${loaded} s"
    wait "$oha_pid" || true
    echo "## the API meanwhile"
    cat "$work/oha.txt"
    ;;
forwarded)
    start a bench-api
    a_serve=$serve_port; a_admin=$admin_port
    start b bench-api
    b_serve=$serve_port; b_admin=$admin_port
    card=$(sed -e 's/.*"card_id":"\([^"]*\)".*/\1/' "$work/one.json")
    until [ $(($(scored "$a_admin") + $(scored "$b_admin"))) -ge "$events" ]; do sleep 1; done
    until curl -s "127.0.0.1:$a_serve/v1/owner?key=$card" | grep -q '"url"'; do sleep 0.5; done
    owner=$(curl -s "127.0.0.1:$a_serve/v1/owner?key=$card")
    echo "two instances scored $events events; $card: $owner"
    # Each instance's mirror copies the other's changelog after the backlog:
    # let it settle, so that the two loads meet the same machine.
    sleep 30
    if echo "$owner" | grep -q '"here":true'; then holder=$a_serve; other=$b_serve; else holder=$b_serve; other=$a_serve; fi
    IFS=, read -ra offered <<<"$rates"
    for rate in "${offered[@]}"; do
        echo
        echo "## $rate requests/s for ${seconds}s to the holder"
        load "$holder" "$rate" "$seconds"
        echo
        echo "## $rate requests/s for ${seconds}s to the other instance (one hop)"
        load "$other" "$rate" "$seconds"
    done
    ;;
esac
