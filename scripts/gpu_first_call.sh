#!/usr/bin/env bash
# A session's first GPU call: the whole suite (tenth session: 770 passed, 12 skipped, 472 s at -n 16), near
# the device tool's 600 s command limit, so alone in its call; carry [".whl"].
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 560 python3 -m pytest -q -p no:warnings -n 16 tests >"$OUT/tests.log" 2>&1
tail -1 "$OUT/tests.log"; grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20
