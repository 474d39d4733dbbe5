#!/usr/bin/env bash
# Starts a throwaway redis-server on a free loopback port and runs benches/redis.rs against
# it: RedisStore at concurrency 1/16/64/256, then redis-benchmark -P 16 -c 50 calling the
# same script on the same server, and the ratio.
#   benches/redis_compare.sh [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done

echo "redis-server $(redis-server --version | grep -o 'v=[^ ]*') on 127.0.0.1:$port, $(nproc) cores"
cargo bench --bench redis --features redis -- --redis "redis://127.0.0.1:$port" "$@"
