#!/usr/bin/env bash
# A session's first GPU call: the whole suite (eleventh session: 778 passed, 12 skipped, 453-486 s at -n 16),
# near the device tool's 600 s command limit, so alone in its call; carry [".whl"]. Exits with pytest's
# status.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 560 python3 -m pytest -q -p no:warnings -n 16 tests >"$OUT/tests.log" 2>&1
rc=$?
tail -1 "$OUT/tests.log"
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20
exit $rc
