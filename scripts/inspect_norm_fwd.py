"""What torch.compile runs for the norm forwards it wins, beside trifuse's kernel: Inductor's chosen launch
configs (and, with TORCH_LOGS=output_code, its source on stderr), and one profiled call of each provider
for Nsight Compute:

  TORCH_LOGS=output_code python3 scripts/inspect_norm_fwd.py 2>inductor.txt
  ncu --clock-control none --profile-from-start off --metrics ... python3 scripts/inspect_norm_fwd.py
"""
import gc
import sys

import torch

sys.path.insert(0, "src")
from trifuse.bench import norm as bench_norm
from trifuse.bench.suite import Case

CASES = [("rms_norm", 8192, 512, torch.float16), ("add_rms_norm", 8192, 512, torch.float16),
         ("rms_norm", 8192, 8192, torch.bfloat16), ("bias_layer_norm", 512, 8192, torch.float32),
         ("layer_norm", 8192, 512, torch.bfloat16), ("add_rms_norm", 512, 8192, torch.float32),
         ("layer_norm", 8192, 8192, torch.bfloat16)]


def main() -> None:
    calls = []
    for kind, m, n, dtype in CASES:
        case = Case((m, n), dtype, "fwd", (("kind", kind),))
        inp = bench_norm.inputs(case, "cuda")
        built = bench_norm.providers(case)
        for name in ("trifuse", "compile"):
            fn = built[name](inp)
            for _ in range(3):  # compile, autotune, warm
                fn()
            calls.append((f"{kind} {m}x{n} {str(dtype)[6:]} {name}", fn))
    torch.cuda.synchronize()
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    for obj in gc.get_objects():
        try:
            found = isinstance(obj, CachingAutotuner) and obj.launchers
        except ReferenceError:  # a dead weakref proxy
            continue
        if found:
            cfg = obj.launchers[0].config
            print(f"inductor {obj.fn.__name__}: {cfg.kwargs} warps {cfg.num_warps} stages {cfg.num_stages}, "
                  f"size hints {obj.size_hints}")
    torch.cuda.profiler.start()
    for label, fn in calls:
        torch.cuda.nvtx.range_push(label)
        fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
    torch.cuda.profiler.stop()
    print("profiled, in order:", *(label for label, _ in calls), sep="\n  ")


if __name__ == "__main__":
    main()
