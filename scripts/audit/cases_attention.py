"""Attention cases: q/k/v and dO layouts, forward and backward."""
import math

import torch

import trifuse

from .checks import Failure, check_close, check_equal, grads, leaf64, rnd, sync
from .config import ATT_FLOOR, DEV, FP64, SMOKE
from .references import attn_ref, sdpa
from .routes import TRACE, WARNINGS, expect_route


# ----------------------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------------------
def make_qkv(B, Hq, Hkv, Sq, Skv, D, dtype, layout, qk_scale=1.0):
    """q, k, v (B, H, S, D) views requiring grad (through their storage leaves), stored per layout:
    bhsd | bshd (HF's (B, S, H, D) transposed) | qkv (one fused (B, S, 3, H, D) projection) |
    misalign (q 1 element past alignment, k 3 elements past, v with a head-dim stride of 2) |
    expand_kv (k, v broadcast over the batch: stride 0)."""
    def r(*s, sc=1.0):
        return (torch.randn(*s, device=DEV) * sc).to(dtype)

    if layout == "bhsd":
        q, k, v = r(B, Hq, Sq, D, sc=qk_scale), r(B, Hkv, Skv, D, sc=qk_scale), r(B, Hkv, Skv, D)
        for t in (q, k, v):
            t.requires_grad_()
        return q, k, v
    if layout == "bshd":
        qs, ks, vs = r(B, Sq, Hq, D, sc=qk_scale), r(B, Skv, Hkv, D, sc=qk_scale), r(B, Skv, Hkv, D)
        for t in (qs, ks, vs):
            t.requires_grad_()
        return qs.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2)
    if layout == "qkv":
        assert Sq == Skv and Hq == Hkv
        base = r(B, Sq, 3, Hq, D)
        with torch.no_grad():
            base[:, :, :2] *= qk_scale
        base.requires_grad_()
        q, k, v = (base[:, :, i].transpose(1, 2) for i in range(3))
        return q, k, v
    if layout == "misalign":
        def off(shape, o, sc):
            data = r(*shape, sc=sc)
            buf = torch.zeros(data.numel() + o, dtype=dtype, device=DEV)
            buf[o:].copy_(data.reshape(-1))
            buf.requires_grad_()
            return buf[o:].view(shape)
        q = off((B, Hq, Sq, D), 1, qk_scale)
        k = off((B, Hkv, Skv, D), 3, qk_scale)
        vs = r(B, Hkv, Skv, 2 * D).requires_grad_()
        return q, k, vs[..., ::2]
    if layout == "expand_kv":
        q = r(B, Hq, Sq, D, sc=qk_scale).requires_grad_()
        k1 = r(1, Hkv, Skv, D, sc=qk_scale).requires_grad_()
        v1 = r(1, Hkv, Skv, D).requires_grad_()
        return q, k1.expand(B, Hkv, Skv, D), v1.expand(B, Hkv, Skv, D)
    raise ValueError(layout)


def make_do(mode, out):
    B, H, S, D = out.shape
    if mode == "randn":
        return rnd(B, H, S, D, dtype=out.dtype)
    if mode == "bshd":
        return rnd(B, S, H, D, dtype=out.dtype).transpose(1, 2)
    if mode == "expand_d":  # strides (0, 0, 0, 1): unit last stride, zero others
        return rnd(D, dtype=out.dtype).expand(B, H, S, D)
    if mode == "sum":  # all strides 0
        return torch.ones((), dtype=out.dtype, device=DEV).expand(B, H, S, D)
    raise ValueError(mode)


def c_attn(notes, B, Hq, Hkv, Sq, Skv, D, dtype, causal, *, layout="bhsd", bwd=True, do_mode="randn",
           scale=None, qk_scale=1.0, expect_fwd=None, expect_bwd=None, not_expect=None, determinism=False):
    q, k, v = make_qkv(B, Hq, Hkv, Sq, Skv, D, dtype, layout, qk_scale)
    sc = scale if scale is not None else 1.0 / math.sqrt(D)
    out = trifuse.attention(q, k, v, causal=causal, scale=scale)
    sync()
    if expect_fwd:
        expect_route(notes, expect_fwd)
    q64, k64, v64 = leaf64(q), leaf64(k), leaf64(v)
    ref = attn_ref(q64, k64, v64, causal, sc)
    fl = ATT_FLOOR[dtype]
    qt, kt, vt = (t.detach().clone().requires_grad_() for t in (q, k, v))
    base = None
    if Sq > 0 and Skv > 0 and B * Hq > 0:
        base = sdpa(qt, kt, vt, causal, sc)
    check_close(notes, "out", out, ref, base, fl)
    if determinism:
        check_equal("fwd rerun", out, trifuse.attention(q, k, v, causal=causal, scale=scale))
    if not bwd:
        return
    do = make_do(do_mode, out)
    n_before = len(TRACE)
    g = grads(out, (q, k, v), do)
    sync()
    bwd_routes = TRACE[n_before:]
    gr = grads(ref, (q64, k64, v64), do.double())
    # SDPA's backward takes a dense dO: with the (0, 0, 0, 1)-strided one it faulted (illegal address) on
    # the H100 (torch 2.11), after trifuse's backward had synchronized cleanly (eighteenth session).
    gb = grads(base, (qt, kt, vt), do.contiguous()) if base is not None else (None, None, None)
    for nm, gt, r_, b_ in zip(("dq", "dk", "dv"), g, gr, gb):
        if gt is None:
            raise Failure(f"{nm} is None")
        r_ = torch.zeros_like(gt, dtype=FP64) if r_ is None else r_
        check_close(notes, nm, gt, r_, b_, fl)
    if determinism:
        g2 = grads(trifuse.attention(q, k, v, causal=causal, scale=scale), (q, k, v), do)
        for nm, a_, b_ in zip(("dq", "dk", "dv"), g, g2):
            check_equal(f"{nm} rerun", a_, b_)
    if expect_bwd and not SMOKE and expect_bwd not in bwd_routes:
        msg = f"WARN route: expected {expect_bwd} in backward"
        notes.add(msg)
        WARNINGS.append(msg)
    if not_expect:
        expect_route(notes, not_expect, absent=True)
