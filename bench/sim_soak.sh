#!/usr/bin/env bash
# The CUDA simulator suite (tests/cuda_sim), N consecutive times under load: one CPU-bound process per core
# beside it unless BURNERS says otherwise (BURNERS=0 where other CPU-bound work already loads every core).
#   bash bench/sim_soak.sh 20            # prints one line per run and a summary; exits 1 if any run failed
set -u
cd "$(dirname "$0")/.."
runs=${1:-20}
burners=${BURNERS:-$(nproc)}
pids=()
for _ in $(seq 1 "$burners"); do python -c 'while True: pass' & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
echo "sim_soak: $runs runs of tests/cuda_sim, $burners burner(s), load average $(cut -d' ' -f1-3 /proc/loadavg)"
fail=0
for i in $(seq 1 "$runs"); do
  t0=$(date +%s)
  out=$(cd tests && NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -p no:warnings -p no:cacheprovider cuda_sim 2>&1 | tail -n 1)
  rc=${PIPESTATUS[0]}
  echo "run $i: $out ($(( $(date +%s) - t0 )) s, load $(cut -d' ' -f1 /proc/loadavg))"
  case "$out" in *failed*|*error*) fail=$((fail + 1));; esac
done
echo "sim_soak: $((runs - fail)) of $runs runs passed"
[ "$fail" = 0 ]
