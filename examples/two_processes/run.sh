#!/usr/bin/env bash
# The two-process shop in one command: starts a throwaway nats-server with JetStream on a
# free loopback port, the billing service in the background and the order service in the
# foreground, waits for both and removes the server and its store again.
#   bash examples/two_processes/run.sh [count]                      # builds both in build/
#   bash examples/two_processes/run.sh <orders-binary> <billing-binary> [count]
# Exits 0 when both services succeeded, 77 when nats-server is not installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
count=1000
case $# in
0 | 1)
    count=${1:-$count}
    root="$(cd "$here/../.." && pwd)"
    bash "$root/scripts/deps.sh"
    # As scripts/example.sh: a fresh build/ gets Release (and Ninja when installed); an
    # existing one keeps its generator and build type.
    settings=()
    if [ ! -f "$root/build/CMakeCache.txt" ]; then
        settings=(-DCMAKE_BUILD_TYPE=Release)
        if command -v ninja >/dev/null 2>&1; then
            settings+=(-G Ninja)
        fi
    fi
    cmake -S "$root" -B "$root/build" "${settings[@]}"
    cmake --build "$root/build" --target example_two_processes_orders example_two_processes_billing \
        -j "$(nproc)"
    orders_binary="$root/build/examples/example_two_processes_orders"
    billing_binary="$root/build/examples/example_two_processes_billing"
    ;;
2 | 3)
    orders_binary=$1
    billing_binary=$2
    count=${3:-$count}
    ;;
*)
    echo "usage: $0 [<orders-binary> <billing-binary>] [count]" >&2
    exit 2
    ;;
esac
if ! [[ $count =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: count must be a positive number, not '$count'" >&2
    exit 2
fi
for binary in "$orders_binary" "$billing_binary"; do
    if [ ! -x "$binary" ]; then
        echo "run.sh: $binary is not an executable (build it first)" >&2
        exit 2
    fi
done

server=${HERALD_NATS_SERVER:-$(command -v nats-server || true)}
for candidate in /usr/sbin/nats-server /usr/bin/nats-server; do
    if [ -z "$server" ] && [ -x "$candidate" ]; then
        server=$candidate
    fi
done
if [ -z "$server" ]; then
    echo "run.sh: nats-server not found (Debian package nats-server); skipping" >&2
    exit 77
fi

store="$(mktemp -d "${TMPDIR:-/tmp}/herald-two-processes.XXXXXX")"
server_pid=""
billing_pid=""
# Only the processes started here are stopped, by their id.
cleanup() {
    if [ -n "$billing_pid" ] && kill -0 "$billing_pid" 2>/dev/null; then
        kill "$billing_pid" 2>/dev/null || true
        wait "$billing_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$store"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

accepting() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A random port nobody listens on; should another process take it before the server
# does, the server exits and the next port is tried.
port=""
for _ in $(seq 1 10); do
    candidate=$((20000 + RANDOM % 40000))
    if accepting "$candidate"; then
        continue
    fi
    "$server" -js -a 127.0.0.1 -p "$candidate" -sd "$store" -l "$store/server.log" &
    server_pid=$!
    for _ in $(seq 1 200); do # 20 s at most
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        if accepting "$candidate"; then
            port=$candidate
            break 2
        fi
        sleep 0.1
    done
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
done
if [ -z "$port" ]; then
    echo "run.sh: nats-server did not start; its log:" >&2
    cat "$store/server.log" >&2 || true
    exit 1
fi
url="nats://127.0.0.1:$port"
echo "run.sh: nats-server at $url (store $store), $count orders"

"$billing_binary" "$url" "$count" &
billing_pid=$!
orders_status=0
"$orders_binary" "$url" "$count" || orders_status=$?
billing_status=0
wait "$billing_pid" || billing_status=$?
billing_pid=""

if [ "$orders_status" -ne 0 ] || [ "$billing_status" -ne 0 ]; then
    echo "run.sh: FAILED (order service exit $orders_status, billing service exit $billing_status)" >&2
    exit 1
fi
echo "run.sh: both services succeeded"
