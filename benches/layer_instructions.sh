#!/usr/bin/env bash
# Instructions per request through each layer of `benches/layer.rs`, counted by callgrind:
# unlike wall time, the count does not move with the machine's load. Needs valgrind.
#
#   benches/layer_instructions.sh [bench-id-filter ...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench layer --no-run >/dev/null 2>&1
binary=$(ls -t target/release/deps/layer-* | grep -v '\.d$' | head -1)
ids=("$@")
if [ ${#ids[@]} -eq 0 ]; then
  ids=(allowed/none allowed/ours allowed/ours_no_headers allowed/tower_governor
    allowed/tower_governor_headers denied/ours denied/ours_no_headers denied/tower_governor
    denied/tower_governor_headers)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '| case | instructions per request |\n|---|---:|\n'
for id in "${ids[@]}"; do
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$binary" --bench \
    --profile-time 1 "^layer/$id\$" >/dev/null 2>&1
  # `now` sends one request; its inclusive count over its calls is the cost of one.
  callgrind_annotate --tree=caller --inclusive=yes "$out/cg" 2>/dev/null | awk -v id="$id" '
    /< .*\(([0-9,]+)x\)/ { gsub(/,/, "", $0); match($0, /\(([0-9]+)x\)/); calls += substr($0, RSTART + 1, RLENGTH - 3) }
    /\* .*layer::now \[/ { gsub(/,/, "", $1); printf "| %s | %.0f |\n", id, $1 / calls; exit }
    /^$/ { calls = 0 }' || true
done
