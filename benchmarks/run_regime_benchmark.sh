#!/usr/bin/env bash
# Training regimes against plain (docs/benchmarks.md, issue 21): benchmarks/params/regimes.yaml on the
# synthetic default, arms plain/random, plain/full and, per regime, random, suggestive and full.
# Usage: [PARAMS=FILE] [REGIMES=FILE] [STRATEGIES=a,b] bash benchmarks/run_regime_benchmark.sh [OUT] [SEEDS_A] [SEEDS_B]
#        [benchmark options]
# The two seed lists run as two processes (one torch thread each, nice) on the same output folder (each
# (regime, strategy, seed) campaign has its own folder), then one pass over both finds every round done
# and writes the comparison (benchmark.md, benchmark.json, learning_curves.png).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-output/regimes}
A=${2:-0,1,2}
B=${3:-3,4,5}
shift $(( $# < 3 ? $# : 3 ))
source benchmarks/halves.sh
mkdir -p "$OUT"
in_two_halves "$OUT/plain/split.json" "$OUT" "$A" "$B" \
    benchmark --params "${PARAMS:-benchmarks/params/synthetic.yaml}" --regimes "${REGIMES:-benchmarks/params/regimes.yaml}" \
    --strategies "${STRATEGIES:-suggestive}" --out "$OUT" --quiet "$@"
