# Sourced by the benchmark scripts: run one `activeseg benchmark` command line over two seed lists as two
# processes (one torch thread each, nice) on the same output folder, then one pass over both seed lists that
# finds every round done and writes the comparison.
# Usage: in_two_halves READY_FILE LABEL SEEDS_A SEEDS_B ACTIVESEG_ARGS...  (the second process starts once
# the first has written READY_FILE, what both share: the split, the pretrained network)
in_two_halves() {
    local ready=$1 label=$2 a=$3 b=$4; shift 4
    local as=.venv/bin/activeseg start=$SECONDS
    export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
    nice $as "$@" --seeds "$a" > "$label.a.log" 2>&1 &
    local first=$!
    until [ -f "$ready" ] || ! kill -0 $first 2>/dev/null; do sleep 2; done
    nice $as "$@" --seeds "$b" > "$label.b.log" 2>&1
    wait $first
    $as "$@" --seeds "$a,$b"
    echo "$label: $((SECONDS - start)) s wall for both halves and the comparison"
}
