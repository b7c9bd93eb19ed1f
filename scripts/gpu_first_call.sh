#!/usr/bin/env bash
# The next session's first GPU call (docs/NOTES.md): the whole test suite on the final code of the fifth
# session (run on an H100 then: 580 passed; 4 failures of a test-environment bug since fixed and rerun),
# then the attention bench in device time, whose H200 table in README predates that session's changes
# (causal longest-first order, causal GQA head split); `bash scripts/gpu_bench.sh gemm gemm_bwd` in a
# second call for the GEMM flatten and GELU-slice changes. About 9 minutes with the machine's start.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 300 python3 -m pytest -q -p no:warnings -n 16 tests >"$OUT/tests.log" 2>&1
tail -1 "$OUT/tests.log"; grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20
bash "$(dirname "$0")/gpu_bench.sh" attention
