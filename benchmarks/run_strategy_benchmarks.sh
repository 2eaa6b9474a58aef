#!/usr/bin/env bash
# The runs behind docs/benchmarks.md. Usage: bash benchmarks/run_strategy_benchmarks.sh [OUT]
# Each dataset: seeds 0-2 and 3-5 in two processes (one torch thread each) on the same output folder
# (each (strategy, seed) campaign has its own folder), then one pass over all seeds that finds every
# round done and writes the comparison (benchmark.md, benchmark.json, learning_curves.png).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-output}
ALL=entropy,mc_variance,bald,powerbald,ripu,stochastic_batches,focannot,suggestive,bsq,ceal,label_propagation,coreset

source benchmarks/halves.sh

run() {  # run NAME PARAMS [benchmark options]
    local name=$1 params=$2; shift 2
    in_two_halves "$OUT/$name/split.json" "$OUT/$name" 0,1,2 3,4,5 \
        benchmark --params "$params" --strategies $ALL --out "$OUT/$name" --quiet "$@"
}

mkdir -p "$OUT"
run synthetic benchmarks/params/synthetic.yaml
[ -d "$OUT/isbi-256" ] || .venv/bin/python benchmarks/prepare_isbi.py ../shared/datasets/isbi2012-em "$OUT/isbi-256" --factor 2
run isbi-patch benchmarks/params/isbi-patch.yaml
