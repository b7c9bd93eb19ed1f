#!/usr/bin/env bash
# The next session's first GPU call (docs/NOTES.md): the GPU tests not run since the fourth session's
# host-path changes (fp32 attention) and its patching change, then the softmax and attention benches in device time, whose README
# tables predate that session. Writes logs and JSON/CSV under $OUT; about 9 minutes with the machine's
# start. Run through the device tool with carry [".whl"] so Liger is benchmarked beside trifuse.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
# fp32 attention compiles slowly (D = 128/256): its own budget. test_patch.py: the zero-centred RMSNorm
# patching (interpreter-tested only so far).
timeout 200 python3 -m pytest -q -p no:warnings -n 16 tests/test_patch.py "tests/test_attention.py" -k "fp32 or patch" \
  >"$OUT/tests_attn_fp32.log" 2>&1
tail -1 "$OUT/tests_attn_fp32.log"; grep -E "^(FAILED|ERROR)" "$OUT/tests_attn_fp32.log" | head -20
for op in softmax attention; do
  timeout 170 python3 -m trifuse bench "$op" --hide-host --json "$OUT/bench_${op}_hidden.json" \
    --csv "$OUT/bench_${op}_hidden.csv" >"$OUT/bench_${op}_hidden.log" 2>&1
  echo "bench $op rc $?"
done
