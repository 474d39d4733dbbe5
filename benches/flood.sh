#!/usr/bin/env bash
# A flood of fresh keys against the demo over loopback: wrk sends a random `x-api-key` with
# every request while the server's resident memory is sampled once a second; then a client
# that spent part of its burst before the flood, and a newcomer, are asked again.
#   benches/flood.sh [--duration 15] [--max-keys 200000]
# Prints a markdown table of RSS over time and the answers after the flood.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=15 max_keys=200000
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --max-keys) max_keys=$2; shift 2 ;;
        *) echo "usage: $0 [--duration SECONDS] [--max-keys N]" >&2; exit 2 ;;
    esac
done

cargo build --release --example ping_upload >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples/ping_upload
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port/api/ping"
args=(--addr "127.0.0.1:$port" --limit 60 --period-secs 3600 --burst 100 --key header:x-api-key
    --max-keys "$max_keys")
"$bin" "${args[@]}" >/dev/null &
server=$!
script=$(mktemp)
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$script"' EXIT
for _ in $(seq 100); do
    curl -s -o /dev/null -H 'x-api-key: probe' "$url" && break
    sleep 0.05
done

status() { curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $1" "$url"; }
rss() { awk '/VmRSS/ { print $2 }' "/proc/$server/status"; }

# A client spends 90 of its 100 before the flood.
for _ in $(seq 90); do status regular >/dev/null; done
cat >"$script" <<'LUA'
math.randomseed(os.time())
request = function()
  return wrk.format("GET", nil, { ["x-api-key"] = string.format("%016x%016x", math.random(0, 2^52), math.random(0, 2^52)) })
end
LUA
echo "RSS during a ${duration} s flood of random keys (KiB, once a second):"
echo
echo "| second | RSS KiB |"
echo "|---:|---:|"
echo "| 0 | $(rss) |"
wrk -t2 -c64 -d"${duration}s" -s "$script" "$url" >"$script.out" &
flood=$!
for second in $(seq "$duration"); do
    sleep 1
    echo "| $second | $(rss) |"
done
wait $flood
echo
grep -E 'Requests/sec|requests in' "$script.out" | sed 's/^ */    /'
rm -f "$script.out"
echo
regular=$(curl -s -D - -o /dev/null -H 'x-api-key: regular' "$url" | tr -d '\r' |
    awk -F': ' 'NR == 1 { split($0, s, " ") } tolower($1) == "x-ratelimit-remaining" { print s[2], $2 }')
echo "After the flood (cap: $max_keys states): a newcomer gets $(status "newcomer-$RANDOM");"
echo "the regular client, 10 left before the flood, gets ${regular% *} with ${regular#* } left."
