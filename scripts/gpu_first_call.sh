#!/usr/bin/env bash
# The next session's first GPU call (docs/NOTES.md "Ninth session"): the new Gluon attention forward's
# tests first, then the whole suite, not rerun as a whole since the eighth session (675 passed, 12
# skipped, 339 s at -n 16). About 8-9 minutes with the machine's start; carry [".whl"].
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 120 python3 -m pytest -q -p no:warnings -n 16 tests/test_attention_ws.py >"$OUT/tests_new.log" 2>&1
tail -1 "$OUT/tests_new.log"; grep -E "^(FAILED|ERROR)" "$OUT/tests_new.log" | head -20
timeout 420 python3 -m pytest -q -p no:warnings -n 16 tests >"$OUT/tests.log" 2>&1
tail -1 "$OUT/tests.log"; grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20
