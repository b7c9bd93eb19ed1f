"""Host overhead per call of trifuse's ops (small tensors, so GPU time is negligible), with a profile
of where the host time goes. Run on a GPU: python3 scripts/overhead.py"""
import cProfile
import pstats
import sys
import time

import torch

sys.path.insert(0, "src")
import trifuse  # noqa: E402


def per_call_us(fn, n=1000):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


x = torch.randn(8, 512, device="cuda", dtype=torch.bfloat16)
w = torch.randn(512, device="cuda", dtype=torch.bfloat16)
b = torch.randn(512, device="cuda", dtype=torch.bfloat16)
xg = x.clone().requires_grad_()
wl = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16)
q = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.bfloat16)
calls = {
    "trifuse.softmax": lambda: trifuse.softmax(x),
    "trifuse.softmax (grad)": lambda: trifuse.softmax(xg),
    "torch.softmax": lambda: torch.softmax(x, -1),
    "trifuse.rms_norm": lambda: trifuse.rms_norm(x, w),
    "torch rms_norm": lambda: torch.nn.functional.rms_norm(x, (512,), w),
    "trifuse.layer_norm": lambda: trifuse.layer_norm(x, w, b),
    "trifuse.linear silu": lambda: trifuse.linear(x, wl, activation="silu"),
    "trifuse.attention": lambda: trifuse.attention(q, q, q),
    "torch.empty": lambda: torch.empty_like(x),
}
for name, fn in calls.items():
    print(f"{name:28s} {per_call_us(fn):8.1f} us/call")
for name in ("trifuse.rms_norm", "trifuse.softmax"):
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        calls[name]()
    prof.disable()
    print(f"--- profile of {name} (300 calls)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)
