#!/usr/bin/env bash
# End to end over loopback HTTP: runs examples/bench_server.rs with no layer, RateLimitLayer
# (MemoryStore with and without rate-limit headers, then RedisStore on a throwaway
# redis-server) and tower_governor's GovernorLayer, loads each with wrk and prints a
# markdown table of requests per second and of the server's CPU time per request.
# Every limiter is keyed by the peer IP and never limits: each request is one allowed decision.
# `static-headers` answers with the same five rate-limit headers and no layer: what carrying
# them costs. The modes take turns, round after round, each round starting one mode further
# on, and each row is a mode's median, so that a drift of the machine's speed weighs on all
# of them alike. The CPU time (user and
# system, from /proc/PID/stat around the load) is what a request costs the server, whatever
# share of the cores wrk takes.
#   benches/e2e.sh [--duration 10s] [--connections 32] [--threads 1] [--rounds 3]
# (--threads: the server's Tokio workers; wrk always runs one thread.)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/stats.sh

duration=10s connections=32 threads=1 rounds=3
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        *) echo "usage: $0 [--duration 10s] [--connections N] [--threads N] [--rounds N]" >&2; exit 2 ;;
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

# `cpu_ticks PID`: the user and system clock ticks a process has used, as "user system".
cpu_ticks() {
    # Fields 14 and 15 of /proc/PID/stat, counted after the command name's parenthesis.
    sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f12,13
}

# `rps MODE`: starts the server in MODE, loads it with wrk, sets `result` to wrk's
# Requests/sec and `cpu` to the server's user and system µs per request, as
# "user system" (not in a subshell, so the EXIT trap still sees the server).
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
    local out before after
    before=$(cpu_ticks "$server")
    out=$(timeout 120 wrk -t1 -c"$connections" -d"$duration" "http://$addr/")
    after=$(cpu_ticks "$server")
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
    local requests
    requests=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
    cpu=$(awk -v b="$before" -v a="$after" -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        printf "%.2f %.2f", (y[1] - x[1]) / hz / n * 1e6, (y[2] - x[2]) / hz / n * 1e6
    }')
}

modes=(none static-headers ours ours-no-headers ours-redis governor)
declare -A runs user system
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 0 $((rounds - 1))); do
    # Each round starts one mode further on, so that no mode always follows the same one.
    for i in "${!modes[@]}"; do
        mode=${modes[$(((i + round) % ${#modes[@]}))]}
        rps "$mode"
        runs[$mode]+="$result "
        read -r u s <<<"$cpu"
        user[$mode]+="$u "
        system[$mode]+="$s "
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086 # one word per round
none=$(median ${runs[none]})
# shellcheck disable=SC2086
governor=$(median ${runs[governor]})

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "redis-server $(redis-server --version | grep -o 'v=[^ ]*' | cut -c3-) on 127.0.0.1:$port"
echo "Load average (1, 5, 15 min): $load_before before, $load_after after."
echo "wrk -t1 -c$connections -d$duration, server with $threads Tokio worker thread(s); median of $rounds rounds."
echo
echo "| mode | requests/s (median) | rounds' range | / none | / tower_governor | server CPU µs per request, user + system (median) |"
echo "|---|---:|---:|---:|---:|---:|"
# `row LABEL MODE [ANCHOR]`
row() {
    local figures
    read -r -a figures <<<"${runs[$2]}"
    # shellcheck disable=SC2086 # one word per round
    awk -v label="$1" -v r="$(median "${figures[@]}")" -v range="$(range "${figures[@]}")" \
        -v none="$none" -v gov="${3:-}" -v u="$(median ${user[$2]})" \
        -v s="$(median ${system[$2]})" 'BEGIN {
        split(range, ends, " ")
        printf "| %s | %.0f | %.0f–%.0f | %.2f | %s | %.2f + %.2f |\n", label, r, ends[1], ends[2],
            r / none, gov == "" ? "" : sprintf("%.2f", r / gov), u, s
    }'
}
row none none
row "no layer, the five rate-limit headers fixed" static-headers
row "ours (MemoryStore)" ours "$governor"
row "ours (MemoryStore), no rate-limit headers" ours-no-headers "$governor"
row "ours (RedisStore)" ours-redis "$governor"
row "tower_governor" governor
