"""Does the L2 flush's own dirty data cost the timed op? Time copies and norms after a 256 MB memset
(zero_: L2 left full of dirty lines) vs after a 256 MB read (L2 left full of clean lines), both with the
1 ms GPU sleep; also the memset without the sleep, and a memset, a sleep, then the read. Median of 200
reps, 3 alternating rounds, best per variant (bench/timing.py's flush_l2 is the read).

  python3 scripts/flush_probe.py
"""
import statistics
import sys

import torch

sys.path.insert(0, "src")
import trifuse

flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
flush32 = flush.view(torch.int32)
CYC = 1_800_000  # ~1 ms


def zero_flush():
    flush.zero_()


def read_flush():
    flush32.sum(dtype=torch.int64)


def zero_then_read():
    flush.zero_()
    torch.cuda._sleep(CYC)
    flush32.sum(dtype=torch.int64)


def timeit(fn, fl, sleep=True, reps=200):
    st = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    en = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for _ in range(10):
        fn()
    for s, e in zip(st, en):
        fl()
        if sleep:
            torch.cuda._sleep(CYC)
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(st, en)) * 1e3


cases = {}
for mb in (32, 48, 64, 128, 512):
    src = torch.empty(mb * 2**20 // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    cases[f"copy {mb}MB"] = (lambda d=dst, s=src: d.copy_(s), mb * 2**20)
x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
b = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
cases["rms fwd 4096^2"] = (lambda: trifuse.rms_norm(x, w), 2 * x.numel() * 2)
cases["LN fwd 4096^2"] = (lambda: trifuse.layer_norm(x, w, b), 2 * x.numel() * 2)
xg = x.clone().requires_grad_()
wg = w.clone().requires_grad_()
dy = torch.randn_like(x)
y = trifuse.rms_norm(xg, wg)
cases["rms bwd 4096^2"] = (lambda: torch.autograd.grad(y, (xg, wg), dy, retain_graph=True), 3 * x.numel() * 2)
xl = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16)
cases["rms fwd 16384x4096"] = (lambda: trifuse.rms_norm(xl, w), 2 * xl.numel() * 2)

variants = {"zero+sleep": (zero_flush, True), "read+sleep": (read_flush, True), "zero": (zero_flush, False),
            "zero,sleep,read+sleep": (zero_then_read, True)}
best = {}
for rnd in range(3):
    for name, (fn, nbytes) in cases.items():
        for v, (fl, sl) in variants.items():
            t = timeit(fn, fl, sl)
            best[(name, v)] = min(best.get((name, v), 1e9), t)
print(f"{'case':22s}" + "".join(f"{v:>24s}" for v in variants))
for name, (fn, nbytes) in cases.items():
    print(f"{name:22s}" + "".join(f"{best[(name, v)]:10.1f}us {nbytes / best[(name, v)] / 1e6:7.2f}TB/s"
                                  for v in variants))
