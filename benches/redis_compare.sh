#!/usr/bin/env bash
# Starts a throwaway redis-server on a free loopback port and runs benches/redis.rs against
# it: RedisStore at concurrency 1/16/64/256, then redis-benchmark -P 16 -c 50 calling the
# same script on the same server, and the ratio. With --cluster it also starts a 3-master
# Redis Cluster (no replicas) and runs the same RedisStore measurements on it.
#   benches/redis_compare.sh [--cluster] [--seconds N] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."

cluster= args=()
for arg in "$@"; do
    if [ "$arg" = --cluster ]; then cluster=1; else args+=("$arg"); fi
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
dir=$(mktemp -d)
servers=()
trap 'kill "${servers[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
# `start PORT [SETTING...]`: a redis-server without persistence, once it answers PING.
start() {
    local port=$1
    shift
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" "$@" \
        >"$dir/$port.log" 2>&1 &
    servers+=($!)
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
}

port=$(free_port)
start "$port"
echo "redis-server $(redis-server --version | grep -o 'v=[^ ]*') on 127.0.0.1:$port, $(nproc) cores"
if [ -z "$cluster" ]; then
    cargo bench --bench redis --features redis -- --redis "redis://127.0.0.1:$port" "${args[@]}"
    exit
fi

nodes=() urls=()
for _ in 1 2 3; do
    node=$(free_port)
    start "$node" --cluster-enabled yes --cluster-port "$(free_port)" \
        --cluster-config-file "nodes-$node.conf"
    nodes+=("127.0.0.1:$node") urls+=("redis://127.0.0.1:$node")
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for node in "${nodes[@]}"; do
    until redis-cli -p "${node#*:}" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done
echo "Redis Cluster of 3 masters on ${nodes[*]}"
cargo bench --bench redis --features redis-cluster -- --redis "redis://127.0.0.1:$port" "${args[@]}"
cargo bench --bench redis --features redis-cluster -- --cluster "$(IFS=,; echo "${urls[*]}")" "${args[@]}"
