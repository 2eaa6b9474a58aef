#!/usr/bin/env bash
# The runs behind docs/benchmarks.md. Usage: bash benchmarks/run_strategy_benchmarks.sh [OUT]
# Each dataset: seeds 0-2 and 3-5 in two processes (one torch thread each) on the same output folder
# (each (strategy, seed) campaign has its own folder), then one pass over all seeds that finds every
# round done and writes the comparison (benchmark.md, benchmark.json, learning_curves.png).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-output}
AS=.venv/bin/activeseg
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
ALL=entropy,mc_variance,bald,powerbald,ripu,stochastic_batches,focannot,suggestive,bsq,ceal,label_propagation,coreset

run() {  # run NAME PARAMS [benchmark options]
    local name=$1 params=$2; shift 2
    local start=$SECONDS
    $AS benchmark --params "$params" --strategies $ALL --seeds 0,1,2 --out "$OUT/$name" --quiet "$@" > "$OUT/$name.a.log" 2>&1 &
    local first=$!
    until [ -f "$OUT/$name/split.json" ] || ! kill -0 $first 2>/dev/null; do sleep 2; done
    $AS benchmark --params "$params" --strategies $ALL --seeds 3,4,5 --out "$OUT/$name" --quiet "$@" > "$OUT/$name.b.log" 2>&1
    wait $first
    $AS benchmark --params "$params" --strategies $ALL --seeds 0,1,2,3,4,5 --out "$OUT/$name" --quiet "$@"
    echo "$name: $((SECONDS - start)) s wall for both halves and the comparison"
}

mkdir -p "$OUT"
run synthetic benchmarks/params/synthetic.yaml
[ -d "$OUT/isbi-256" ] || .venv/bin/python benchmarks/prepare_isbi.py ../shared/datasets/isbi2012-em "$OUT/isbi-256" --factor 2
run isbi-patch benchmarks/params/isbi-patch.yaml
