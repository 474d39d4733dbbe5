#!/usr/bin/env bash
# Runs the in-process benches side by side with governor / tower_governor and prints
# markdown tables of criterion estimates and ratios (ours / anchor; below 1 means we are faster).
#   benches/compare.sh [--rounds 1] [criterion arguments, e.g. --measurement-time 5]
# With several rounds, the benches run again and again, each row gives the medians of the
# rounds' estimates, its ratio the median of the rounds' ratios (ours and the anchor measured
# a minute apart), and the range of those ratios: a shared machine's speed drifts.
# With valgrind installed, also counts instructions per request through the layers.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/stats.sh

rounds=1
if [ "${1:-}" = --rounds ]; then
    rounds=$2
    shift 2
fi
target=${CARGO_TARGET_DIR:-target}
# Criterion's estimate in ns in one `estimates.json`: the slope over its linear samples,
# else the median.
criterion_estimate() {
    local number='"point_estimate":([0-9.eE+-]+)'
    if grep -q '"slope":{' "$1"; then
        sed -E "s/.*\"slope\":\{\"confidence_interval\":\{[^}]*\},$number.*/\1/" "$1"
    else
        sed -E "s/.*\"median\":\{\"confidence_interval\":\{[^}]*\},$number.*/\1/" "$1"
    fi
}
# Every round's estimate of each bench, by bench: "ns ns ns ".
declare -A estimates
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for _ in $(seq "$rounds"); do
    cargo bench --bench memory -- "$@" >&2
    cargo bench --bench layer -- "$@" >&2
    for file in "$target"/criterion/{memory,layer}_*/*/new/estimates.json; do
        id=${file#"$target/criterion/"}
        estimates[${id%/new/estimates.json}]+="$(criterion_estimate "$file") "
    done
done
per_key=$(cargo bench --bench memory_per_key 2>/dev/null)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# The median of a bench's estimates, e.g. `estimate memory_hot_key/ours`.
estimate() {
    # shellcheck disable=SC2086 # one word per round
    median ${estimates[$1]}
}
# `row label ours anchor`: the medians of both benches, the median of their per-round
# ratios and, with several rounds, the range of those ratios.
row() {
    local ours anchor ratios=() i
    read -r -a ours <<<"${estimates[$2]}"
    read -r -a anchor <<<"${estimates[$3]}"
    for i in "${!ours[@]}"; do
        ratios+=("$(awk -v a="${ours[$i]}" -v b="${anchor[$i]}" 'BEGIN { print a / b }')")
    done
    local range=
    if [ "$rounds" -gt 1 ]; then
        range=$(range "${ratios[@]}" | awk '{ printf " | %.2f–%.2f", $1, $2 }')
    fi
    awk -v label="$1" -v a="$(estimate "$2")" -v b="$(estimate "$3")" \
        -v ratio="$(median "${ratios[@]}")" -v range="$range" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.2f%s |\n", label, a, b, ratio, range }'
}
# `header first columns...`: a table's header, with the ratio range column when needed.
header() {
    if [ "$rounds" -gt 1 ]; then
        echo "| $* | ratio | ratio range |"
        echo "|---|---:|---:|---:|---:|"
    else
        echo "| $* | ratio |"
        echo "|---|---:|---:|---:|"
    fi
}

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "Load average (1, 5, 15 min): $load_before before, $load_after after."
echo
echo "In-process decision, ns per check:"
echo
header "case | MemoryStore | governor keyed"
for group in hot_key 100k_keys new_key 2_threads_hot_key denied_hot_key; do
    row "$group" "memory_$group/ours" "memory_$group/governor"
done
row "hot_key, every decision in full" memory_hot_key/ours_decided memory_hot_key/governor
echo
none=$(estimate layer_allowed/none)
echo "Whole layer, ns per request through \`oneshot\` (no layer: $(printf '%.1f' "$none") ns):"
echo
header "case | RateLimitLayer | GovernorLayer"
for outcome in allowed denied; do
    row "$outcome, rate-limit headers" "layer_$outcome/ours" "layer_$outcome/tower_governor_headers"
    row "$outcome, no rate-limit headers" "layer_$outcome/ours_no_headers" \
        "layer_$outcome/tower_governor"
done
row "allowed, two rate-limit headers each (ours: IETF only)" layer_allowed/ours_ietf_headers \
    layer_allowed/tower_governor_headers
row "allowed, rate-limit headers, the response has a content type" \
    layer_allowed/ours_content_type layer_allowed/tower_governor_headers_content_type
echo
echo "Memory per key after 1 000 000 \`IpAddr\` keys:"
echo
echo "| measure | MemoryStore | governor keyed | ratio |"
echo "|---|---:|---:|---:|"
value() { echo "$per_key" | sed -nE "s/^$1 .*$2=([0-9.]+).*/\1/p"; }
for measure in heap_bytes_per_key rss_bytes_per_key; do
    awk -v label="$measure" -v a="$(value ours "$measure")" -v b="$(value governor "$measure")" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.2f |\n", label, a, b, a / b }'
done
if command -v valgrind >/dev/null; then
    echo
    benches/layer_instructions.sh
fi
