#!/usr/bin/env bash
# Device-time benches of every op with its peers, JSON/CSV/log under $OUT (one GPU call each part; a
# part fits the device tool's 600 s limit). Carry [".whl"] so Liger-Kernel is benchmarked beside trifuse.
# Usage: [ROUNDS=3] bash scripts/gpu_bench.sh gemm|norm|softmax|attention ...  (ROUNDS: bench --rounds;
# norm at 3 rounds took 359 s on the H100)
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
bench() {  # name timeout args...
  local name=$1 limit=$2
  shift 2
  timeout "$limit" python3 -m trifuse bench "$@" --hide-host --rounds "${ROUNDS:-3}" --json "$OUT/bench_${name}.json" \
    --csv "$OUT/bench_${name}.csv" >"$OUT/bench_${name}.log" 2>&1
  echo "bench $name rc $?"
}
for op in "$@"; do
  case $op in
    gemm) bench gemm 560 gemm --providers cublas_bare,eager,addmm_activation ;;
    gemm_bwd) bench gemm_bwd 560 gemm --direction bwd,fwd+bwd --providers cublas_bare,eager \
                --shapes 8192x4096x14336,8192x14336x4096,16384x4096x4096,8192x8192x8192 ;;
    *) bench "$op" 560 "$op" ;;
  esac
done
