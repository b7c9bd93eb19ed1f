"""Attention on the GPU: the warp-specialized Gluon kernels against the Triton kernels and SDPA.

  python3 scripts/ab_attention.py check   # outputs and LSE vs an fp32 SDPA reference, odd shapes, poisoned
  python3 scripts/ab_attention.py time [STAGES...]  # device time, alternating rounds, best of three
  python3 scripts/ab_attention.py bwd-check   # the Gluon backward kernels vs the Triton ones
  python3 scripts/ab_attention.py bwd-time [SPLITS...]  # the backward with either dK/dV kernel (the Gluon one
                                                        # also at each head split given), and cuDNN's

`time` runs the bench suite's D=128 / D=64 shapes: the Triton kernel, the Gluon kernel (at each ring depth
given, with the launcher's schedule, then with each schedule: "grid" one program a tile, "round_robin" and
"dynamic" persistent) and SDPA's cuDNN backend, alternating within each of three rounds.
"""
# ruff: noqa: B023 - run() is timed before the loop moves on
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "src")
import trifuse.ops.attention as oa
import trifuse.ops.attention_ws as ows
from trifuse.bench.timing import time_ms
from trifuse.library.eager import direct_launch

# The kernels themselves at every length, whatever the launcher's choice.
ows.WS_MIN_SKV_D64 = ows.WS_MIN_SQ = ows.WS_MIN_FLOPS = 0
# (B, Hq, Hkv, Sq, Skv) of the correctness checks: one row, ragged blocks, GQA, Sq != Skv both ways.
CHECK_SHAPES = ((1, 1, 1, 1, 1), (2, 4, 4, 127, 127), (1, 8, 2, 1000, 1000), (2, 2, 1, 17, 300), (1, 2, 2, 300, 17),
                (1, 4, 4, 129, 257), (1, 2, 1, 4097, 4097), (3, 6, 6, 64, 64))


def check_cases():
    """(dtype, D, shape, causal) of every correctness check."""
    for dtype in (torch.bfloat16, torch.float16):
        for d in (64, 128):
            for shape in CHECK_SHAPES:
                for causal in (False, True):
                    yield dtype, d, shape, causal


def run_fwd(q, k, v, causal, kernel, stages=None, out=None, lse=None, schedule=None):
    """(out, lse) of one launch; poisoned first unless the caller passes its buffers (timing)."""
    B, Hq, Sq, D = q.shape
    if out is None:
        out = torch.full_like(q, float("nan"))
        lse = torch.full((B, Hq, Sq), float("nan"), device=q.device)
    scale = 1 / math.sqrt(D)
    with direct_launch():
        if kernel == "ws":
            saved = ows.ws_stages
            if stages:
                ows.ws_stages = lambda d: stages
            try:
                if not ows.ws_applies(q, k, v, out, scale, causal):
                    raise RuntimeError("ws does not apply")
                ows.launch_fwd(q, k, v, out, lse, causal, scale, schedule)
            finally:
                ows.ws_stages = saved
        else:
            oa.attention_fwd_into(q, k, v, out, lse, causal, scale, config=oa.fwd_config(D, causal, q.dtype, Sq))
    return out, lse


def reference(q, k, v, causal):
    qf, kf, vf = (t.float() for t in (q, k, v))
    g = q.shape[1] // k.shape[1]
    kf, vf = kf.repeat_interleave(g, 1), vf.repeat_interleave(g, 1)
    s = qf @ kf.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return torch.softmax(s, -1) @ vf, torch.logsumexp(s, -1)


def check() -> None:
    torch.manual_seed(0)
    bad = 0
    for dtype, d, (b, hq, hkv, sq, skv), causal in check_cases():
        for layout in ("bhsd", "bshd"):
            if layout == "bhsd":
                q = torch.randn(b, hq, sq, d, device="cuda", dtype=dtype)
                k = torch.randn(b, hkv, skv, d, device="cuda", dtype=dtype)
                v = torch.randn(b, hkv, skv, d, device="cuda", dtype=dtype)
            else:  # (B, S, H, D) storage seen through a transpose, as HF models hand it
                q = torch.randn(b, sq, hq, d, device="cuda", dtype=dtype).transpose(1, 2)
                k = torch.randn(b, skv, hkv, d, device="cuda", dtype=dtype).transpose(1, 2)
                v = torch.randn(b, skv, hkv, d, device="cuda", dtype=dtype).transpose(1, 2)
            ref_o, ref_l = reference(q, k, v, causal)
            got_o, got_l = run_fwd(q, k, v, causal, "ws")
            tri_o, _ = run_fwd(q, k, v, causal, "triton")
            for schedule in ("grid", "round_robin", "dynamic"):
                other_o, _ = run_fwd(q, k, v, causal, "ws", schedule=schedule)
                assert torch.equal(other_o, got_o), f"the {schedule} schedule's output differs"
            err = (got_o.float() - ref_o).abs().max().item()
            tri_err = (tri_o.float() - ref_o).abs().max().item()
            lse_err = (got_l - ref_l).abs().max().item()
            ok = err <= max(2 * tri_err, 1e-2) and lse_err < 1e-3 and not got_o.isnan().any()
            bad += not ok
            if not ok or (d == 128 and layout == "bhsd"):
                print(f"{'OK ' if ok else 'BAD'} {dtype} D={d} {b}x{hq}/{hkv}x{sq}x{skv} causal={causal} "
                      f"{layout}: ws err {err:.2e} (triton {tri_err:.2e}), lse err {lse_err:.2e}",
                      flush=True)
    print(f"check: {bad} bad")


def run_bwd(q, k, v, do, out, lse, causal, ws, grads=None, split=None, schedule=None):
    """(dq, dk, dv) of one backward, poisoned first unless the caller passes them (timing); ws: the
    Gluon kernels (ops.attention_ws.WS_BWD: True for dK/dV, "all" for dQ too, False none); split, schedule:
    the dK/dV kernel's head slices and tile schedule (default the launcher's)."""
    dq, dk, dv = grads or (torch.full_like(t, float("nan")) for t in (q, k, v))
    saved = ows.WS_BWD, ows.ws_dkdv_split, ows.WS_BWD_SCHEDULE
    ows.WS_BWD, ows.WS_BWD_SCHEDULE = ws, schedule or saved[2]
    if split:
        ows.ws_dkdv_split = lambda group, programs, causal: split
    try:
        with direct_launch():
            if ws and not ows.ws_bwd_applies(q, k, v, do, lse, dk, dv, 1 / math.sqrt(q.shape[-1]), causal):
                raise RuntimeError("the Gluon dK/dV kernel does not apply")
            oa.attention_bwd_into(do, q, k, v, out, lse, dq, dk, dv, causal, 1 / math.sqrt(q.shape[-1]))
    finally:
        ows.WS_BWD, ows.ws_dkdv_split, ows.WS_BWD_SCHEDULE = saved
    return dq, dk, dv


def bwd_check() -> None:
    torch.manual_seed(0)
    bad = 0
    for dtype, d, (b, hq, hkv, sq, skv), causal in check_cases():
        q = torch.randn(b, hq, sq, d, device="cuda", dtype=dtype)
        k = torch.randn(b, skv, hkv, d, device="cuda", dtype=dtype).transpose(1, 2)
        v = torch.randn(b, hkv, skv, d, device="cuda", dtype=dtype)
        do = torch.randn_like(q)
        out, lse = run_fwd(q, k, v, causal, "triton")
        tri = run_bwd(q, k, v, do, out, lse, causal, False)
        scale = max(t.float().abs().max().item() for t in tri)
        for mode in (True, "all"):
            ws = run_bwd(q, k, v, do, out, lse, causal, mode)
            errs = [(a.float() - t.float()).abs().max().item() for a, t in zip(ws, tri)]
            ok = all(e <= 2e-2 * max(scale, 1) for e in errs) and not any(t.isnan().any() for t in ws)
            bad += not ok
            print(f"{'OK ' if ok else 'BAD'} ws={mode} {dtype} D={d} {b}x{hq}/{hkv}x{sq}x{skv} "
                  f"causal={causal}: |ws - triton| dq {errs[0]:.2e} dk {errs[1]:.2e} dv {errs[2]:.2e} "
                  f"(max |grad| {scale:.2e})", flush=True)
    print(f"bwd-check: {bad} bad")


def bwd_time(splits: list[int]) -> None:
    shapes = [(8, 16, 2048, 128, 16), (4, 16, 4096, 128, 16), (1, 16, 16384, 128, 16), (8, 16, 2048, 128, 2),
              (2, 16, 8192, 128, 2), (8, 32, 2048, 64, 32)]
    for b, h, s, d, hkv in shapes:
        for causal in (False, True):
            q = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16)
            k, v = (torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            do = torch.randn_like(q)
            out, lse = run_fwd(q, k, v, causal, "triton")
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                ref = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal, enable_gqa=hkv != h)
            grads = tuple(torch.empty_like(t) for t in (q, k, v))
            best = {}
            for _ in range(3):
                names = ["triton", "ws", "grid"] + [f"split{n}" for n in splits if (h // hkv) % n == 0] + ["cudnn"]
                for name in names:
                    if name == "cudnn":
                        def run():
                            torch.autograd.grad(ref, (qg, kg, vg), do, retain_graph=True)
                    elif name in ("triton", "ws", "grid"):
                        def run():
                            run_bwd(q, k, v, do, out, lse, causal, name != "triton", grads,
                                    schedule="grid" if name == "grid" else None)
                    else:
                        def run():
                            run_bwd(q, k, v, do, out, lse, causal, True, grads, int(name[5:]))
                    best[name] = min(best.get(name, 1e9), time_ms(run, hide_host=True))
            row = "  ".join(f"{n} {2.5 * tflops(b, h, s, d, causal, t):.0f}" for n, t in best.items())
            print(f"bwd {b}x{h}x{s}x{d} hkv={hkv} causal={causal}: {row} TFLOP/s", flush=True)


def tflops(b, h, s, d, causal, ms):
    return 4 * b * h * s * s * d / (2 if causal else 1) / ms / 1e9


def time(stages: list[int]) -> None:
    shapes = [(b, 16, s, 128, hkv) for b, s in ((32, 512), (16, 1024), (8, 2048), (4, 4096), (2, 8192), (1, 16384))
              for hkv in (16,)]
    shapes += [(8, 16, 2048, 128, 2), (2, 16, 8192, 128, 2), (8, 32, 2048, 64, 32), (2, 32, 8192, 64, 32)]
    variants = ["triton"] + [f"ws{s}" for s in stages] + ["grid", "round_robin", "dynamic", "cudnn"]
    for b, h, s, d, hkv in shapes:
        for causal in (False, True):
            q = torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, hkv, s, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            out, lse = torch.empty_like(q), torch.empty(b, h, s, device="cuda")
            best = {}
            for _ in range(3):
                for name in variants:
                    if name == "cudnn":
                        def run():
                            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                                F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hkv != h)
                    elif name in ("grid", "round_robin", "dynamic"):
                        def run():
                            run_fwd(q, k, v, causal, "ws", out=out, lse=lse, schedule=name)
                    elif name == "triton":
                        def run():
                            run_fwd(q, k, v, causal, "triton", out=out, lse=lse)
                    else:
                        st = int(name[2:]) or None

                        def run():
                            run_fwd(q, k, v, causal, "ws", st, out=out, lse=lse)
                    best[name] = min(best.get(name, 1e9), time_ms(run, hide_host=True))
            row = "  ".join(f"{n} {tflops(b, h, s, d, causal, t):.0f}" for n, t in best.items())
            print(f"{b}x{h}x{s}x{d} hkv={hkv} causal={causal}: {row} TFLOP/s", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "check"
    if what == "check":
        check()
    elif what == "bwd-check":
        bwd_check()
    elif what == "bwd-time":
        bwd_time([int(x) for x in sys.argv[2:]])
    else:
        time([int(x) for x in sys.argv[2:]])
