"""Host overhead per call of each layer of an op (small tensor, so GPU time is negligible)."""
import cProfile
import pstats
import sys
import time

import torch
import triton

sys.path.insert(0, "src")
import trifuse  # noqa: E402
from trifuse.kernels import softmax as k  # noqa: E402
from trifuse.ops.softmax import softmax_fwd_into  # noqa: E402


def per_call_us(fn, n=2000):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


x = torch.randn(8, 512, device="cuda", dtype=torch.bfloat16)
y = torch.empty_like(x)
trifuse.softmax(x)  # registers the torch.library ops
xg = x.clone().requires_grad_()
layers = {
    "raw kernel[grid]": lambda: k.softmax_fwd_rows[(4,)](x, y, 8, 512, 512, 1, 512, LOG=False, BLOCK_M=2,
                                                          BLOCK_N=512, num_warps=2),
    "ops.softmax_fwd_into": lambda: softmax_fwd_into(x, y, False),
    "torch.ops.trifuse.softmax_fwd": lambda: torch.ops.trifuse.softmax_fwd(x, False),
    "trifuse.softmax": lambda: trifuse.softmax(x),
    "trifuse.softmax (requires_grad)": lambda: trifuse.softmax(xg),
    "torch.softmax": lambda: torch.softmax(x, -1),
    "torch.empty": lambda: torch.empty_like(x),
}
for name, fn in layers.items():
    print(f"{name:34s} {per_call_us(fn):8.1f} us/call")
prof = cProfile.Profile()
prof.enable()
for _ in range(500):
    trifuse.softmax(x)
prof.disable()
pstats.Stats(prof).sort_stats("tottime").print_stats(18)
print(triton.__version__)
