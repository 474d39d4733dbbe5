#!/usr/bin/env bash
# Runs the in-process benches side by side with governor / tower_governor and prints
# markdown tables of criterion estimates and ratios (ours / anchor; below 1 means we are faster).
# Extra arguments go to criterion, e.g. `benches/compare.sh --measurement-time 5`. With
# valgrind installed, also counts instructions per request through the layers.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cargo bench --bench memory -- "$@" >&2
cargo bench --bench layer -- "$@" >&2
per_key=$(cargo bench --bench memory_per_key 2>/dev/null)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Criterion's estimate in ns of one benchmark (the slope over its linear samples, else the
# median), e.g. `estimate memory_hot_key/ours`.
estimate() {
    local file="$target/criterion/$1/new/estimates.json" number='"point_estimate":([0-9.eE+-]+)'
    if grep -q '"slope":{' "$file"; then
        sed -E "s/.*\"slope\":\{\"confidence_interval\":\{[^}]*\},$number.*/\1/" "$file"
    else
        sed -E "s/.*\"median\":\{\"confidence_interval\":\{[^}]*\},$number.*/\1/" "$file"
    fi
}
# `row label ours anchor`: one table row with both estimates and their ratio.
row() {
    awk -v label="$1" -v a="$2" -v b="$3" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.2f |\n", label, a, b, a / b }'
}

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "Load average (1, 5, 15 min): $load_before before, $load_after after."
echo
echo "In-process decision, ns per check:"
echo
echo "| case | MemoryStore | governor keyed | ratio |"
echo "|---|---:|---:|---:|"
for group in hot_key 100k_keys new_key 2_threads_hot_key denied_hot_key; do
    row "$group" "$(estimate "memory_$group/ours")" "$(estimate "memory_$group/governor")"
done
row "hot_key, every decision in full" "$(estimate memory_hot_key/ours_decided)" \
    "$(estimate memory_hot_key/governor)"
echo
none=$(estimate layer_allowed/none)
echo "Whole layer, ns per request through \`oneshot\` (no layer: $(printf '%.1f' "$none") ns):"
echo
echo "| case | RateLimitLayer | GovernorLayer | ratio |"
echo "|---|---:|---:|---:|"
for outcome in allowed denied; do
    row "$outcome, rate-limit headers" "$(estimate "layer_$outcome/ours")" \
        "$(estimate "layer_$outcome/tower_governor_headers")"
    row "$outcome, no rate-limit headers" "$(estimate "layer_$outcome/ours_no_headers")" \
        "$(estimate "layer_$outcome/tower_governor")"
done
echo
echo "Memory per key after 1 000 000 \`IpAddr\` keys:"
echo
echo "| measure | MemoryStore | governor keyed | ratio |"
echo "|---|---:|---:|---:|"
value() { echo "$per_key" | sed -nE "s/^$1 .*$2=([0-9.]+).*/\1/p"; }
for measure in heap_bytes_per_key rss_bytes_per_key; do
    row "$measure" "$(value ours "$measure")" "$(value governor "$measure")"
done
if command -v valgrind >/dev/null; then
    echo
    benches/layer_instructions.sh
fi
