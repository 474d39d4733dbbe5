#!/usr/bin/env bash
# Instructions per request through each layer of `benches/layer.rs`, counted by callgrind:
# unlike wall time, the count does not move with the machine's load (nor does it see time
# lost outside the process, such as a CPUID trapped by the hypervisor). Needs valgrind.
# Prints a markdown table: ours / tower_governor, and a refusal / an allowed request.
set -euo pipefail
cd "$(dirname "$0")/.."
# The bench's executable as cargo names it (tests/layer.rs builds a `layer-*` binary too).
binary=$(cargo bench --bench layer --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# `count ID`: instructions per request of the bench `layer/ID`: `now` sends one request,
# so its inclusive count over its number of calls.
count() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$binary" --bench \
        --profile-time 1 "^layer/$1\$" >/dev/null 2>&1
    callgrind_annotate --tree=caller --inclusive=yes "$out/cg" 2>/dev/null | awk '
        /< .*\(([0-9,]+)x\)/ { gsub(/,/, ""); match($0, /\(([0-9]+)x\)/); calls += substr($0, RSTART + 1, RLENGTH - 3) }
        /\* .*layer::now \[/ { gsub(/,/, "", $1); printf "%.0f\n", $1 / calls; exit }
        /^$/ { calls = 0 }' || true
}
row() {
    awk -v label="$1" -v a="$2" -v b="$3" 'BEGIN { printf "| %s | %d | %d | %.2f |\n", label, a, b, a / b }'
}

none=$(count allowed/none)
declare -A ours theirs
for outcome in allowed denied; do
    ours[$outcome/headers]=$(count "$outcome/ours")
    ours[$outcome/plain]=$(count "$outcome/ours_no_headers")
    theirs[$outcome/headers]=$(count "$outcome/tower_governor_headers")
    theirs[$outcome/plain]=$(count "$outcome/tower_governor")
done
ours[ietf]=$(count allowed/ours_ietf_headers)
ours[typed]=$(count allowed/ours_content_type)
theirs[typed]=$(count allowed/tower_governor_headers_content_type)
echo "Whole layer, instructions per request (callgrind; no layer: $none):"
echo
echo "| case | RateLimitLayer | GovernorLayer | ratio |"
echo "|---|---:|---:|---:|"
for outcome in allowed denied; do
    row "$outcome, rate-limit headers" "${ours[$outcome/headers]}" "${theirs[$outcome/headers]}"
    row "$outcome, no rate-limit headers" "${ours[$outcome/plain]}" "${theirs[$outcome/plain]}"
done
row "allowed, two rate-limit headers each (ours: IETF only)" "${ours[ietf]}" \
    "${theirs[allowed/headers]}"
row "allowed, rate-limit headers, the response has a content type" "${ours[typed]}" "${theirs[typed]}"
echo
echo "A refusal over an allowed request, ours: $(awk -v a="${ours[denied/headers]}" -v b="${ours[allowed/headers]}" 'BEGIN { printf "%.2f", a / b }') with rate-limit headers, $(awk -v a="${ours[denied/plain]}" -v b="${ours[allowed/plain]}" 'BEGIN { printf "%.2f", a / b }') without."
