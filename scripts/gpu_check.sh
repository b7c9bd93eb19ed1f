#!/usr/bin/env bash
# GPU check: the whole test suite (bf16, large shapes, torch.compile, opcheck) and the benchmarks, in one
# go. Installs nothing. Results go to $OUT (default ./out): results.tgz holds every log, CSV and JSON.
#   OPS="softmax norm"  benchmarks to run (default: all)      TESTS=0  skip the tests
#   BENCH_ARGS="--quick"  extra arguments for each bench      PYTEST_TARGETS=tests/test_softmax.py
#   HIDE_HOST=1  also run each bench with --hide-host (device time; files bench_<op>_hidden.*)
# Peers: carry the liger-kernel wheel in .whl/ (git-ignored: pass it in the device tool's carry list).
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
RES=$(mktemp -d)/res
mkdir -p "$RES"
OPS=${OPS:-"softmax norm gemm attention"}
python3 -m trifuse info 2>&1 | tee "$RES/info.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv >>"$RES/info.txt" 2>&1
if [ "${TESTS:-1}" = 1 ]; then
  python3 -m pytest -v -p no:warnings -n "${JOBS:-4}" ${PYTEST_TARGETS:-tests} ${PYTEST_ARGS:-} >"$RES/tests.log" 2>&1
  tail -1 "$RES/tests.log"; grep -E "^(FAILED|ERROR)" "$RES/tests.log" | head -20
fi
for op in $OPS; do
  python3 -m trifuse bench "$op" ${BENCH_ARGS:-} --csv "$RES/bench_$op.csv" --json "$RES/bench_$op.json" \
    2>&1 | tee "$RES/bench_$op.log"
  if [ "${HIDE_HOST:-0}" = 1 ]; then
    python3 -m trifuse bench "$op" --hide-host ${BENCH_ARGS:-} --csv "$RES/bench_${op}_hidden.csv" \
      --json "$RES/bench_${op}_hidden.json" 2>&1 | tee "$RES/bench_${op}_hidden.log"
  fi
done
tar czf "$OUT/results.tgz" -C "$(dirname "$RES")" res
