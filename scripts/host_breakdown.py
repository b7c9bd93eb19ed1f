"""Host time per call of each layer of the norm and softmax paths and of every op (tiny tensors: the
GPU is idle), so the layer that costs can be found; `--profile` adds a cProfile of rms_norm and softmax.
Run on a GPU: python3 scripts/host_breakdown.py [--profile]"""
import cProfile
import pstats
import sys
import time

import torch

sys.path.insert(0, "src")
from host_profile import NullFunction

import trifuse
from trifuse.kernels import softmax as ks
from trifuse.library import norm as ln
from trifuse.library import softmax as ls
from trifuse.library.eager import direct_launch
from trifuse.ops._launch import FastKernel
from trifuse.ops.norm import norm_bwd_into, norm_fwd_into
from trifuse.ops.softmax import softmax_fwd_into


def per_call_us(fn, n=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def main():
    x = torch.randn(8, 512, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(512, device="cuda", dtype=torch.bfloat16)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    wl = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16)
    q = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.bfloat16)
    xs, ws, bs = (torch.randn(*s, device="cuda", dtype=torch.bfloat16) for s in ((64, 128), (256, 128), (256,)))
    y, rstd, dx, dw = torch.empty_like(x), torch.empty(8, device="cuda"), torch.empty_like(x), torch.empty_like(w)

    def direct(fn):
        def run():
            with direct_launch():
                fn()
        return run

    y_rms = trifuse.rms_norm(xg, wg)
    y_torch = torch.nn.functional.rms_norm(xg, (512,), wg)
    y_null = NullFunction.apply(xg)
    y_sm = trifuse.softmax(xg)
    y_smt = torch.softmax(xg, -1)
    fast = FastKernel(ks.softmax_fwd_rows)

    def launch(kernel):
        kernel[(4,)](x, y, 8, 512, 512, 1, 512, LOG=False, BLOCK_M=2, BLOCK_N=512, num_warps=2)

    calls = {
        "torch.empty_like": lambda: torch.empty_like(x),
        "softmax kernel[grid] (Triton)": lambda: launch(ks.softmax_fwd_rows),
        "softmax kernel (FastKernel)": lambda: launch(fast),
        "softmax_fwd_into (direct)": direct(lambda: softmax_fwd_into(x, y, False)),
        "softmax impl (direct)": direct(lambda: ls._fwd(x, False)),
        "softmax FastOp": lambda: ls.softmax_rows(x, False),
        "trifuse.softmax": lambda: trifuse.softmax(x),
        "torch.softmax": lambda: torch.softmax(x, -1),
        "norm_fwd_into (direct)": direct(lambda: norm_fwd_into(x, w, None, None, None, 1e-6, True, y, None, None,
                                                               rstd)),
        "norm impl (direct)": direct(lambda: ln._norm_fwd(x, w, None, None, None, 1e-6, True)),
        "norm FastOp": lambda: ln.norm_fwd(x, w, None, None, None, 1e-6, True),
        "trifuse.rms_norm": lambda: trifuse.rms_norm(x, w),
        "torch rms_norm": lambda: torch.nn.functional.rms_norm(x, (512,), w),
        "norm_bwd_into (direct)": direct(lambda: norm_bwd_into(x, None, x, None, w, None, rstd, True, dx, dw)),
        "norm bwd impl (direct)": direct(lambda: ln._norm_bwd(x, None, x, None, w, None, rstd, rstd, True, False)),
        "trifuse.linear silu": lambda: trifuse.linear(x, wl, activation="silu"),
        "torch silu(linear)": lambda: torch.nn.functional.silu(torch.nn.functional.linear(x, wl)),
        # the bench's 64x256x128 epilogues (x (64, 128), w (256, 128), bias)
        **{f"trifuse.linear {act}{' dropout' if p else ''} 64x256x128":
           (lambda act=act, p=p: trifuse.linear(xs, ws, bs, activation=act, dropout_p=p, seed=1 if p else None))
           for act, p in (("none", 0.0), ("silu", 0.0), ("gelu", 0.0), ("silu", 0.1))},
        "trifuse.attention": lambda: trifuse.attention(q, q, q),
        "torch sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q),
        "grad: null Function": lambda: torch.autograd.grad([y_null], [xg], [x], retain_graph=True),
        "grad: trifuse.rms_norm": lambda: torch.autograd.grad([y_rms], [xg, wg], [x], retain_graph=True),
        "grad: torch rms_norm": lambda: torch.autograd.grad([y_torch], [xg, wg], [x], retain_graph=True),
        "grad: trifuse.softmax": lambda: torch.autograd.grad([y_sm], [xg], [x], retain_graph=True),
        "grad: torch.softmax": lambda: torch.autograd.grad([y_smt], [xg], [x], retain_graph=True),
    }
    try:
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        y_lig = LigerRMSNormFunction.apply(xg, wg, 1e-6)
        calls["liger rms_norm"] = lambda: LigerRMSNormFunction.apply(x, w, 1e-6)
        calls["grad: liger rms_norm"] = lambda: torch.autograd.grad([y_lig], [xg, wg], [x], retain_graph=True)
    except ImportError:
        pass
    for name, fn in calls.items():
        print(f"{name:30s} {per_call_us(fn):8.1f} us/call", flush=True)
    if "--profile" in sys.argv[1:]:
        for name in ("trifuse.rms_norm", "trifuse.softmax"):
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(300):
                calls[name]()
            prof.disable()
            print(f"--- profile of {name} (300 calls)")
            pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
