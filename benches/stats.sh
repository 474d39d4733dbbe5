# Sourced by benches/compare.sh and benches/e2e.sh: summaries of one figure per round.

# `median NUMBER...`
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# `range NUMBER...`: the lowest and the highest, as "low high".
range() {
    printf '%s\n' "$@" | sort -g | sed -n '1p;$p' | paste -sd' '
}
