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
AS=.venv/bin/activeseg
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
BENCH=(benchmark --params "${PARAMS:-benchmarks/params/synthetic.yaml}" --regimes "${REGIMES:-benchmarks/params/regimes.yaml}"
       --strategies "${STRATEGIES:-suggestive}" --out "$OUT" --quiet "$@")

mkdir -p "$OUT"
start=$SECONDS
nice $AS "${BENCH[@]}" --seeds "$A" > "$OUT.a.log" 2>&1 &
first=$!
until [ -f "$OUT/plain/split.json" ] || ! kill -0 $first 2>/dev/null; do sleep 2; done
nice $AS "${BENCH[@]}" --seeds "$B" > "$OUT.b.log" 2>&1
wait $first
$AS "${BENCH[@]}" --seeds "$A,$B"
echo "regimes: $((SECONDS - start)) s wall for both halves and the comparison"
