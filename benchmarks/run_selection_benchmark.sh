#!/usr/bin/env bash
# The selection benchmark of docs/benchmarks.md (issue 22): a start of at most 0.5 % of the pixels chosen by
# the strategy where it has its own choice, 8 rounds of 1 %, against random and the foreground-aware random_fg.
# Usage: bash benchmarks/run_selection_benchmark.sh PARAMS OUT SEEDS_A SEEDS_B [benchmark options]
#   e.g. bash benchmarks/run_selection_benchmark.sh benchmarks/params/selection-synthetic.yaml \
#            bench-output/selection-synthetic 0,1,2,3,4 5,6,7,8,9
# The two seed lists run as two processes (one torch thread each, nice) on the same output folder, then one
# pass over both finds every round done and writes the comparison (benchmark.md, benchmark.json, curves).
set -euo pipefail
cd "$(dirname "$0")/.."
PARAMS=$1 OUT=$2 A=$3 B=$4
shift 4
source benchmarks/halves.sh
STRATEGIES=${STRATEGIES:-random_fg,typiclust,maxherding,claspe,coverage_then_uncertainty,suggestive}
mkdir -p "$OUT"
in_two_halves "$OUT/pretrain/embeddings.npz" "$OUT" "$A" "$B" \
    benchmark --params "$PARAMS" --strategies "$STRATEGIES" --out "$OUT" --quiet "$@"
