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
wg = w.clone().requires_grad_()
y = torch.empty_like(x)
from trifuse.kernels import softmax as ks  # noqa: E402
from trifuse.ops._launch import FastKernel  # noqa: E402

_fast = FastKernel(ks.softmax_fwd_rows)


def _raw(kernel):
    kernel[(4,)](x, y, 8, 512, 512, 1, 512, LOG=False, BLOCK_M=2, BLOCK_N=512, num_warps=2)


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
    "trifuse.softmax fwd+bwd": lambda: trifuse.softmax(xg).backward(x),
    "torch.softmax fwd+bwd": lambda: torch.softmax(xg, -1).backward(x),
    "trifuse.rms_norm fwd+bwd": lambda: trifuse.rms_norm(xg, wg).backward(x),
    "torch rms_norm fwd+bwd": lambda: torch.nn.functional.rms_norm(xg, (512,), wg).backward(x),
    "raw softmax kernel[grid]": lambda: _raw(ks.softmax_fwd_rows),
    "FastKernel softmax": lambda: _raw(_fast),
}
try:
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    calls["liger rms_norm"] = lambda: LigerRMSNormFunction.apply(x, w, 1e-6)
    calls["liger rms_norm fwd+bwd"] = lambda: LigerRMSNormFunction.apply(xg, wg, 1e-6).backward(x)
except ImportError:
    pass
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
