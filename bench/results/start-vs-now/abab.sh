#!/bin/bash
# Issue 17's starting tree (c4be410: uvicorn front, 500 µs queue delay) and this tree, in turn,
# ROUNDS times, each the same harness run from its own tree (its own Triton-direct baseline).
#   bench/results/start-vs-now/abab.sh            # ~15 min; then summarise.py $OUT [--base/--main LABEL]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=${OUT:-/tmp/abab}; BASE=${BASE:-c4be410}; WT=${WT:-/tmp/wt-base}
export TRITON_VENV=${TRITON_VENV:-$ROOT/.triton-venv}
[ -d "$WT" ] || git -C "$ROOT" worktree add -f "$WT" "$BASE"
mkdir -p "$OUT"
for r in ${ROUNDS:-1 2 3}; do
  for t in base main; do
    d=$WT; [ $t = main ] && d=$ROOT
    (cd "$d" && "$ROOT/.venv/bin/python" -m bench.harness --targets triton_direct,gateway_full \
        --connections 16,64,256 --runs 3 --duration 5 --out "$OUT/$t-$r" --no-plots > "$OUT/$t-$r.log" 2>&1)
    cp "$OUT/$t-$r"/bench-*.json "$OUT/$t-round$r.json"   # what summarise.py reads
    echo "$(date +%T) $t-$r done"
  done
done
