"""A/B: the cooperative Gluon GEMM against the Triton TMA kernel (table config), the ping-pong Gluon kernel and
cuBLAS, bf16, device time, best of ROUNDS alternating rounds."""
import os
import sys

import torch

sys.path.insert(0, "src")
import trifuse.ops.gemm as og
import trifuse.ops.gemm_gluon as ogl
from trifuse.bench.timing import time_ms
from trifuse.library.eager import direct_launch

ROUNDS = int(os.environ.get("ROUNDS", "3"))
KERNELS = os.environ.get("KERNELS", "tma,coop,ws").split(",")
EPILOGUES = [(e.split("+")[0], 0.1 if e.endswith("+drop") else 0.0)
             for e in os.environ.get("EPILOGUES", "none,silu,gelu,silu+drop").split(",")]
SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192), (8192, 4096, 14336), (8192, 14336, 4096), (16384, 4096, 4096)]
for m, k, n in SHAPES:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    seed = torch.tensor([7], device="cuda")
    table = og.choose_config(x, w.t(), out)
    times = {}
    cases = {"cublas": lambda: torch.mm(x, w.t(), out=out)}
    for act, p in EPILOGUES:
        for name, cfg in (("tma", table), ("coop", ogl.COOP_CONFIG), ("ws", ogl.WS_CONFIG)):
            if (act == "none" and name == "ws") or name not in KERNELS:
                continue
            cases[f"{act}{'+drop' if p else ''}/{name}"] = (
                lambda cfg=cfg, act=act, p=p: og.gemm_into(x, w.t(), out, bias=None if act == "none" else bias,
                                                           seed=seed, activation=act, dropout_p=p, config=cfg))
    with direct_launch():
        for _ in range(ROUNDS):
            for name, fn in cases.items():
                times.setdefault(name, []).append(time_ms(fn, hide_host=True))
    cub = min(times["cublas"])
    row = " ".join(f"{name} {min(t) * 1e3:.0f}us ({cub / min(t):.3f})" for name, t in times.items())
    print(f"{m}x{k}x{n}: {row}", flush=True)
