#!/usr/bin/env bash
# End to end over loopback HTTP: runs examples/bench_server.rs with no layer, RateLimitLayer
# (MemoryStore with and without rate-limit headers, then RedisStore on a throwaway
# redis-server) and tower_governor's GovernorLayer, loads each with wrk and prints a
# markdown table of requests per second.
# Every limiter is keyed by the peer IP and never limits: each request is one allowed decision.
#   benches/e2e.sh [--duration 10s] [--connections 32] [--threads 1]
# (--threads: the server's Tokio workers; wrk always runs one thread.)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10s connections=32 threads=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "usage: $0 [--duration 10s] [--connections N] [--threads N]" >&2; exit 2 ;;
    esac
done

cargo build --release --example bench_server --features redis >&2
server_bin=${CARGO_TARGET_DIR:-target}/release/examples/bench_server

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    >"$dir/redis.log" 2>&1 &
redis=$!
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    kill "$redis" 2>/dev/null
    wait "$redis" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
done
redis-cli -p "$port" ping >/dev/null

# `rps MODE`: starts the server in MODE, loads it with wrk, sets `result` to wrk's
# Requests/sec (not in a subshell, so the EXIT trap still sees the server).
rps() {
    "$server_bin" --mode "$1" --threads "$threads" --redis "redis://127.0.0.1:$port" \
        >"$dir/server.out" 2>"$dir/server.err" &
    server=$!
    local addr=
    for _ in $(seq 200); do
        addr=$(sed -n 's/^listening on http:\/\///p' "$dir/server.out")
        [ -n "$addr" ] && break
        kill -0 "$server" 2>/dev/null || { cat "$dir/server.err" >&2; return 1; }
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "$1: the server did not start" >&2; return 1; }
    local out
    out=$(timeout 120 wrk -t1 -c"$connections" -d"$duration" "http://$addr/")
    echo "$out" >&2
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    # A run with errors or non-2xx answers would not measure the layer.
    if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
        echo "$1: wrk reported errors" >&2
        return 1
    fi
    result=$(echo "$out" | sed -n 's/^Requests\/sec: *//p')
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rps none; none=$result
rps ours; ours=$result
rps ours-no-headers; ours_no_headers=$result
rps ours-redis; ours_redis=$result
rps governor; governor=$result
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "redis-server $(redis-server --version | grep -o 'v=[^ ]*' | cut -c3-) on 127.0.0.1:$port"
echo "Load average (1, 5, 15 min): $load_before before, $load_after after."
echo "wrk -t1 -c$connections -d$duration, server with $threads Tokio worker thread(s)."
echo
echo "| mode | requests/s | / none | / tower_governor |"
echo "|---|---:|---:|---:|"
row() {
    awk -v mode="$1" -v r="$2" -v none="$none" -v gov="$3" 'BEGIN {
        printf "| %s | %.0f | %.2f | %s |\n", mode, r, r / none, gov == "" ? "" : sprintf("%.2f", r / gov)
    }'
}
row none "$none" ""
row "ours (MemoryStore)" "$ours" "$governor"
row "ours (MemoryStore), no rate-limit headers" "$ours_no_headers" "$governor"
row "ours (RedisStore)" "$ours_redis" "$governor"
row "tower_governor" "$governor" ""
