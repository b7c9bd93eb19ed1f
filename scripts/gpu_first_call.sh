#!/usr/bin/env bash
# The next session's first GPU call (docs/NOTES.md): the GPU tests of what has not run on a GPU yet, then
# the norm sweep that measures the persistent forward. Writes logs under $OUT; about 10 minutes with the
# machine's start. Run through the device tool with carry [".whl"] so Liger is importable for later benches.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
# The norm forward's _normalize_store extraction and FWD_PERSISTENT, the GEMM bench's activation-memory
# hook (test_gemm_backward, test_cli) and the fp32 attention kernels after query_block.
timeout 150 python3 -m pytest -q -p no:warnings -n 16 tests/test_norm.py tests/test_norm_backward.py \
  tests/test_gemm_backward.py tests/test_cli.py >"$OUT/tests.log" 2>&1
tail -1 "$OUT/tests.log"; grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20
# fp32 attention compiles slowly (D = 128/256 took over 300 s beside the rest of the suite): its own budget.
timeout 200 python3 -m pytest -q -p no:warnings -n 16 tests/test_attention.py -k fp32 >"$OUT/tests_attn_fp32.log" 2>&1
tail -1 "$OUT/tests_attn_fp32.log"; grep -E "^(FAILED|ERROR)" "$OUT/tests_attn_fp32.log" | head -20
timeout 220 python3 scripts/sweep_norm.py >"$OUT/sweep_norm.log" 2>&1
grep -E "^fwd|current default" "$OUT/sweep_norm.log"
