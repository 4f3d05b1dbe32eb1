# Shared set-up for scripts/demo.sh and scripts/test.sh. Each step checks
# first and skips what is already there, so a warm machine starts at once.

# One build cache outside the clone, reused by every clone on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamscore/target}"

# rust-toolchain.toml pins the compiler. When rustup lacks that name but its
# stable toolchain is that version, link it instead of downloading it again.
ensure_toolchain() {
    local want
    want=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
    rustup toolchain list | grep -q "^$want-" && return 0
    if rustc +stable --version | grep -q "^rustc $want "; then
        rustup toolchain link "$want" "$(rustc +stable --print sysroot)"
    fi
}

# Debian packages the builds need: a C toolchain for librdkafka (bundled),
# and what Tansu's and RocksDB's builds use (clang, cmake, protoc).
APT_PACKAGES=(build-essential pkg-config libclang-dev cmake protobuf-compiler python3)

# What only the test script needs: docker-compose checks the compose file
# (it needs no Docker engine for that).
TEST_APT_PACKAGES=(docker-compose)

# Installs the packages named (default: APT_PACKAGES) that are missing.
ensure_apt_packages() {
    local missing=()
    local wanted=("${APT_PACKAGES[@]}" "$@")
    for p in "${wanted[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The Kafka-protocol broker the integration tests run against.
ensure_tansu() {
    if command -v tansu >/dev/null 2>&1; then
        return 0
    fi
    echo "installing the Tansu broker (about 10 minutes on 2 cores, once)"
    cargo install tansu --locked --features dynostore,libsql
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts Tansu on 127.0.0.1; sets TANSU_PID and TANSU_BROKERS, and stops it
# (and removes its files) when the calling script exits.
#
# Storage is SQLite in a fresh directory, not memory://: Tansu 0.6.0's memory
# engine answers a fetch from the middle of a record batch with the *next*
# batch, so a consumer resuming from a committed offset skips records. The
# restart tests caught that; SQLite storage serves such fetches correctly.
start_tansu() {
    local port
    port=$(free_port)
    TANSU_DIR=$(mktemp -d "${TMPDIR:-/tmp}/streamscore-tansu.XXXXXX")
    TANSU_LOG="$TANSU_DIR/tansu.log"
    (cd "$TANSU_DIR" && exec tansu broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://tansu.db") >"$TANSU_LOG" 2>&1 &
    TANSU_PID=$!
    trap 'kill "$TANSU_PID" 2>/dev/null; wait "$TANSU_PID" 2>/dev/null; rm -rf "$TANSU_DIR"' EXIT
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            TANSU_BROKERS="127.0.0.1:$port"
            echo "tansu broker up on $TANSU_BROKERS (log: $TANSU_LOG)"
            return 0
        fi
        sleep 0.1
    done
    echo "tansu did not start; its log:" >&2
    cat "$TANSU_LOG" >&2
    return 1
}
