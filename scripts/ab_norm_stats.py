"""A/B of the norm forward with and without its statistics stores (kernels/norm.py STORE_STATS), device
time at the launcher level, alternating, best of ROUNDS (default 5) rounds.

  python3 scripts/ab_norm_stats.py
"""
# ruff: noqa: B023 - each case's lambdas run before the loop moves on
import os
import sys

import torch

sys.path.insert(0, "src")
from trifuse.bench.timing import time_ms
from trifuse.library.eager import direct_launch
from trifuse.ops.norm import norm_fwd_into

CASES = [("rms", 8192, 512, torch.bfloat16), ("rms", 8192, 512, torch.float16), ("biasLN", 512, 8192, torch.float32),
         ("LN", 4096, 4096, torch.bfloat16), ("LN", 8192, 8192, torch.bfloat16), ("rms", 8192, 8192, torch.bfloat16)]


def main() -> None:
    for kind, m, n, dtype in CASES:
        x = torch.randn(m, n, device="cuda", dtype=dtype)
        w, b, ib = (torch.randn(n, device="cuda", dtype=dtype) for _ in range(3))
        y = torch.empty_like(x)
        mean, rstd = torch.empty(m, device="cuda"), torch.empty(m, device="cuda")
        rms = kind == "rms"
        runs = {
            "stats": lambda: norm_fwd_into(x, w, None if rms else b, ib if kind == "biasLN" else None, None, 1e-5,
                                           rms, y, None, None if rms else mean, rstd),
            "no_stats": lambda: norm_fwd_into(x, w, None if rms else b, ib if kind == "biasLN" else None, None,
                                              1e-5, rms, y, None, None, None),
        }
        times = {}
        with direct_launch():
            for _ in range(int(os.environ.get("ROUNDS", "5"))):
                for name, fn in runs.items():
                    times.setdefault(name, []).append(time_ms(fn, hide_host=True))
        print(f"{kind} {m}x{n} {str(dtype)[6:]}: " + " ".join(f"{k} {min(v) * 1e3:.2f}us" for k, v in times.items()),
              flush=True)


if __name__ == "__main__":
    main()
