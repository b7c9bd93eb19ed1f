"""GPU sweep of softmax launch configs (rows per program, warps, loop chunk) to set ops/softmax.py's
heuristic. Prints, per shape, each config's GB/s and the heuristic's choice."""
# ruff: noqa: B023, BLE001 - timing lambdas run before the loop moves on; a failing config is reported

import sys

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, "src")
from trifuse.kernels import softmax as k
from trifuse.kernels import softmax_split as ks
from trifuse.ops.softmax import rows_config


def bench(fn, nbytes):
    return nbytes / (do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e-3) / 1e9


def sweep_bwd(dt):
    for m, n in [(8192, 512), (16384, 1024), (4096, 4096), (16384, 4096), (8192, 8192), (4096, 32768)]:
        y = torch.softmax(torch.randn(m, n, device="cuda"), -1).to(dt)
        dy = torch.randn_like(y)
        dx = torch.empty_like(y)
        res = []
        bn = triton.next_power_of_2(n)
        for bm in (1, 2, 4, 8, 16):
            for w in (2, 4, 8, 16, 32):
                per_thread = bm * bn // (32 * w)
                if per_thread > 64 or per_thread < 2:
                    continue
                fn = lambda: k.softmax_bwd_rows[(triton.cdiv(m, bm),)](
                    y, dy, dx, m, n, y.stride(0), dy.stride(0), 1, dx.stride(0), LOG=False,
                    BLOCK_M=bm, BLOCK_N=bn, num_warps=w)
                res.append((bench(fn, 6 * m * n), bm, w))
        res.sort(reverse=True)
        top = ", ".join(f"bm{r[1]} w{r[2]}:{r[0]:.0f}" for r in res[:6])
        print(f"bwd {m}x{n} heuristic={rows_config(n)} top: {top}")


def main():
    dt = torch.bfloat16
    if "--bwd" in sys.argv:
        return sweep_bwd(dt)
    sweep_split(dt)
    for m, n in [(8192, 512), (16384, 1024), (4096, 4096), (16384, 4096), (8192, 8192), (4096, 32768)]:
        x = torch.randn(m, n, device="cuda", dtype=dt)
        y = torch.empty_like(x)
        res = []
        bn = triton.next_power_of_2(n)
        for bm in sorted({1, 2, 4, 8, 16, 32} & set(range(1, max(2, 65536 // bn) + 1))):
            for w in (1, 2, 4, 8, 16, 32):
                if bm * bn // (32 * w) > 128 or bm * bn // (32 * w) < 1:
                    continue
                fn = lambda: k.softmax_fwd_rows[(triton.cdiv(m, bm),)](
                    x, y, m, n, x.stride(0), 1, y.stride(0), LOG=False, BLOCK_M=bm, BLOCK_N=bn, num_warps=w)
                try:
                    res.append((bench(fn, 4 * m * n), bm, w))
                except Exception as e:  # out of resources
                    res.append((0.0, bm, w, type(e).__name__))
        res.sort(reverse=True)
        top = ", ".join(f"bm{r[1]} w{r[2]}:{r[0]:.0f}" for r in res[:6])
        print(f"{m}x{n} heuristic={rows_config(n)} top: {top}")
    for m, n in [(1024, 131072), (512, 262144), (2048, 65536)]:
        x = torch.randn(m, n, device="cuda", dtype=dt)
        y = torch.empty_like(x)
        res = []
        for bn in (2048, 4096, 8192, 16384):
            for w in (4, 8, 16, 32):
                fn = lambda: k.softmax_fwd_looped[(m,)](
                    x, y, n, x.stride(0), 1, y.stride(0), LOG=False, BLOCK_N=bn, num_warps=w)
                res.append((bench(fn, 4 * m * n), bn, w))
        res.sort(reverse=True)
        print(f"looped {m}x{n} top: " + ", ".join(f"bn{r[1]} w{r[2]}:{r[0]:.0f}" for r in res[:6]))


def sweep_split(dt):
    for m, n in [(8192, 16384), (4096, 32768), (2048, 65536), (1024, 131072), (512, 262144)]:
        x = torch.randn(m, n, device="cuda", dtype=dt)
        y = torch.empty_like(x)
        ref = torch.softmax(x.float(), -1)
        res = []
        for bn in (4096, 8192, 16384):
            for w in (4, 8, 16):
                splits = triton.next_power_of_2(triton.cdiv(n, bn))
                ws = torch.empty(m, 2 * splits, device="cuda")
                cnt = torch.zeros(m, dtype=torch.int32, device="cuda")

                def fn():
                    cnt.zero_()
                    ks.softmax_fwd_split[(m * splits,)](x, y, ws, cnt, n, x.stride(0), 1, y.stride(0),
                                                       LOG=False, SPLITS=splits, BLOCK_N=bn, num_warps=w)
                fn()
                err = (y.float() - ref).abs().max().item()
                res.append((bench(fn, 4 * m * n), bn, w, err))
        res.sort(reverse=True)
        top = ", ".join(f"bn{r[1]} w{r[2]}:{r[0]:.0f} (err {r[3]:.1e})" for r in res[:5])
        print(f"split {m}x{n} top: {top}")


if __name__ == "__main__":
    main()
