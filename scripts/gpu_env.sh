# Sourced by the scripts/gpu_*.sh: the repository root as working directory, $OUT for results, the source
# tree on PYTHONPATH, and any peer wheels carried in .whl/ (git-ignored: pass it in the device tool's carry
# list; liger-kernel, see docs/NOTES.md) installed under /tmp/site. Installs nothing else.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
# A fresh inductor cache per call: a warm machine keeps /tmp between calls, and its cache served a user
# kernel's launcher compiled for the previous call's kernel signature (a missing grid argument).
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$(mktemp -d /tmp/inductor.XXXX)}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
