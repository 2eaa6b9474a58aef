#!/usr/bin/env bash
# The runs behind docs/benchmarks.md. Usage: bash benchmarks/run_strategy_benchmarks.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-output}
AS=.venv/bin/activeseg
ALL=entropy,mc_variance,bald,stochastic_batches,focannot,suggestive,bsq,ceal,label_propagation,coreset
$AS benchmark --params benchmarks/params/synthetic.yaml --strategies $ALL --seeds 0,1,2 --out "$OUT/synthetic" --quiet
$AS benchmark --params benchmarks/params/isbi-patch.yaml --dataset ../shared/datasets/isbi2012-em \
    --strategies entropy,mc_variance,focannot,coreset --seeds 0 \
    --out "$OUT/isbi-patch" --quiet
$AS benchmark --params benchmarks/params/isbi-image.yaml --dataset ../shared/datasets/isbi2012-em \
    --strategies mc_variance --seeds 0 --out "$OUT/isbi-image" --quiet
