#!/bin/bash
# The HTTP front's ceiling (2026-12-07, BENCHMARKS.md "The HTTP front on the loop"): the same
# orjson echo behind an asyncio protocol + httptools (proto_srv.py) and behind granian's
# embedded RSGI server (rsgi_embed.py; granian is no longer a dependency: pip install
# granian~=2.8.9 to rerun), wrk -t1 -c64, interleaved rounds; server CPU per request from /proc.
# usage: bench/results/front/run.sh ROUNDS DURATION   (from the repository root)
cd "$(dirname "$0")"
PY=${PY:-../../../.venv/bin/python}
R=${1:-3}; D=${2:-10}
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
one() { # name port cmd...
  name=$1; port=$2; shift 2
  "$@" > /tmp/front-$name.log 2>&1 &
  pid=$!
  for i in $(seq 50); do curl -s -o /dev/null -XPOST -d '{"inputs":[1]}' http://127.0.0.1:$port/ && break; sleep 0.2; done
  wrk -t1 -c64 -d2s -s body.lua http://127.0.0.1:$port/ >/dev/null
  c0=$(cpu $pid)
  out=$(wrk -t1 -c64 -d${D}s --latency -s body.lua http://127.0.0.1:$port/)
  c1=$(cpu $pid)
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  tck=$(getconf CLK_TCK)
  echo "$name rps=$rps p50=$p50 p99=$p99 us_per_req=$(echo "($c1-$c0)*1000000/$tck/$reqs" | bc -l | cut -c1-6)"
  kill $pid; wait $pid 2>/dev/null
}
for r in $(seq $R); do
  one proto 18801 $PY proto_srv.py 18801
  one rsgi 18802 $PY rsgi_embed.py 18802
done
