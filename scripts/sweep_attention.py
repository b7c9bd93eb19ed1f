"""GPU sweep of the flash-attention launch configs at the launcher level (host overhead out), bf16.
Prints TFLOP/s per config, best first, beside the current heuristic's.
Run: python3 scripts/sweep_attention.py [fwd] [bwd] [TAG...]  (default: both directions; a TAG such as
"2048x64" or "causal=True" keeps the cases whose description contains it)"""
# ruff: noqa: B023, BLE001 - timing lambdas run before the loop moves on; a failing config is reported

import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, "src")
import trifuse.ops.attention as oa
from trifuse.library.eager import direct_launch
from trifuse.ops.attention_plan import attention_flops

# B * S = 16k tokens, as in the bench: D = 128 at S = 4096 and 2048 (where causal trails non-causal most),
# D = 64 at S = 2048.
CASES = [(4, 16, 4096, 128, False), (4, 16, 4096, 128, True), (8, 16, 2048, 128, False), (8, 16, 2048, 128, True),
         (8, 32, 2048, 64, False), (8, 32, 2048, 64, True)]
FWD = [oa.FwdConfig(*c) for c in [(128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4), (128, 128, 8, 2),
                                   (128, 128, 8, 3), (128, 64, 4, 3), (128, 32, 4, 4), (64, 64, 4, 3),
                                   (64, 128, 4, 2), (128, 128, 16, 2)]]
KV = [(16, 128, 8), (32, 128, 8), (64, 128, 8), (32, 64, 4), (64, 64, 4), (64, 64, 8), (16, 64, 4), (32, 128, 4),
      (128, 128, 8)]
Q = [(128, 64, 8), (64, 64, 4), (128, 32, 8), (64, 32, 4), (128, 128, 8), (64, 128, 4)]


def tflops(fn, flops):
    with direct_launch():
        return flops / (do_bench(fn, warmup=5, rep=30, return_mode="median") * 1e-3) / 1e12


def report(tag, res, default):
    res.sort(key=lambda r: -r[0])
    print(f"{tag}: " + ", ".join(f"{r[1]}:{r[0]:.0f}" for r in res[:6]) + f" | default {default:.0f}", flush=True)


def main():
    args = sys.argv[1:]
    which = {a for a in args if a in ("fwd", "bwd")} or {"fwd", "bwd"}
    tags = [a for a in args if a not in ("fwd", "bwd")]
    for b, h, s, d, causal in CASES:
        if tags and not any(t in f"{b}x{h}x{s}x{d} causal={causal}" for t in tags):
            continue
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        out, lse = torch.empty_like(q), torch.empty(b, h, s, device="cuda")
        scale = d ** -0.5
        tag = f"{b}x{h}x{s}x{d} causal={causal}"
        fwd_flops = attention_flops(b, h, s, s, d, causal, "fwd")
        if "fwd" in which:
            res = []
            for cfg in FWD:
                try:
                    res.append((tflops(lambda: oa.attention_fwd_into(q, k, v, out, lse, causal, scale, cfg),
                                       fwd_flops), f"{cfg.block_m},{cfg.block_n},w{cfg.num_warps},s{cfg.num_stages}"))
                except Exception as e:
                    print("  fail", cfg, type(e).__name__, str(e)[:80], flush=True)
            report(f"fwd {tag}", res, tflops(lambda: oa.attention_fwd_into(q, k, v, out, lse, causal, scale), fwd_flops))
        if "bwd" in which:
            oa.attention_fwd_into(q, k, v, out, lse, causal, scale)
            do = torch.randn_like(q)
            dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
            base = oa.bwd_config(d, causal, q.dtype, s)

            def run(cfg):
                return lambda: oa.attention_bwd_into(do, q, k, v, out, lse, dq, dk, dv, causal, scale, cfg)

            bwd_flops = 2.5 * fwd_flops
            res = []
            for stages in (2, 3):
                for m1, n1, wkv in KV:
                    cfg = oa.BwdConfig(m1, n1, base.block_m2, base.block_n2, wkv, base.num_warps_q, stages)
                    try:
                        res.append((tflops(run(cfg), bwd_flops), f"kv{m1},{n1},w{wkv} s{stages}"))
                    except Exception as e:
                        print("  fail", cfg, type(e).__name__, str(e)[:80], flush=True)
                for m2, n2, wq in Q:
                    cfg = oa.BwdConfig(base.block_m1, base.block_n1, m2, n2, base.num_warps_kv, wq, stages)
                    try:
                        res.append((tflops(run(cfg), bwd_flops), f"q{m2},{n2},w{wq} s{stages}"))
                    except Exception as e:
                        print("  fail", cfg, type(e).__name__, str(e)[:80], flush=True)
            report(f"bwd {tag} (base {base})", res, tflops(run(None), bwd_flops))


if __name__ == "__main__":
    main()
