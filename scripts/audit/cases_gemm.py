"""GEMM / linear cases: forward, dropout, zero sizes, backward."""
import math

import torch
import torch.nn.functional as F

import trifuse

from .checks import Failure, check_close, check_equal, check_finite, grads, leaf64, mk, rnd, sync
from .config import DEV, FLOOR, FP32, FP64, Z
from .references import gemm_compose, keep_mask
from .routes import TRACE, expect_route


# ----------------------------------------------------------------------------------------------------------
# GEMM / linear forward
# ----------------------------------------------------------------------------------------------------------
def c_gemm_fwd(notes, M, N, K, dtype, act, *, api="gemm", bias=True, a_layout="contig", a_off=0,
               b_layout="contig", b_off=0, bias_layout="contig", bias_off=0, res=None, res_off=0,
               out_dtype=None, x3d=None, expect=None, not_expect=None, determinism=False):
    """api gemm: b (K, N) stored per b_layout; api linear: weight (N, K) stored per b_layout
    (b = weight.t())."""
    a = mk((M, K), dtype, a_layout, a_off)
    if api == "gemm":
        b = mk((K, N), dtype, b_layout, b_off, scale=K ** -0.5 if K else 1.0)
        w = None
    else:
        w = mk((N, K), dtype, b_layout, b_off, scale=K ** -0.5 if K else 1.0)
        b = w.t()
    bs = mk((N,), dtype, bias_layout, bias_off) if bias else None
    final = out_dtype or dtype
    r = mk((M, N), final, res, res_off) if res else None
    x = a if x3d is None else a.reshape(*x3d, K)
    rr = r if (r is None or x3d is None) else r.reshape(*x3d, N)

    def call():
        if api == "gemm":
            return trifuse.gemm(x, b, bs, activation=act, residual=rr, out_dtype=out_dtype)
        return trifuse.linear(x, w, bs, activation=act, residual=rr)

    out = call()
    sync()
    if out.dtype != final:
        raise Failure(f"out dtype {out.dtype} != {final}")
    out2 = out.reshape(M, N)
    ref = gemm_compose(a.double(), b.double(), None if bs is None else bs.double(), act,
                       None if r is None else r.double())
    if final == dtype:
        base = gemm_compose(a, b, bs, act, r)
        floor = FLOOR[dtype]
    elif final == FP32:  # 16-bit operands, fp32 out: torch's fp32 product of the same operands
        base = gemm_compose(a.float(), b.float(), None if bs is None else bs.float(), act, r)
        floor = 1e-3
    else:
        base = gemm_compose(a.float(), b.float(), None if bs is None else bs.float(), act, None).to(final)
        base = base + r if r is not None else base
        floor = FLOOR[final]
    check_close(notes, "out", out2, ref, base, floor)
    if determinism:
        check_equal("rerun", out, call())
    if expect:
        expect_route(notes, expect)
    if not_expect:
        expect_route(notes, not_expect, absent=True)


def c_gemm_dropout(notes, M, N, K, dtype, act, p, seed, *, api="linear", bias=True, expect=None,
                   not_expect=None, extra=False):
    a = rnd(M, K, dtype=dtype)
    w = rnd(N, K, dtype=dtype, scale=K ** -0.5)
    b = w.t() if api == "linear" else w.t().contiguous()
    bs = rnd(N, dtype=dtype) if bias else None

    def call(seed_, p_=p, training=True):
        if api == "linear":
            return trifuse.linear(a, w, bs, activation=act, dropout_p=p_, seed=seed_, training=training)
        return trifuse.gemm(a, b, bs, activation=act, dropout_p=p_, seed=seed_)

    out = call(seed)
    sync()
    if expect:
        expect_route(notes, expect)
    if not_expect:
        expect_route(notes, not_expect, absent=True)
    seed_int = int(seed.item()) if isinstance(seed, torch.Tensor) else int(seed)
    keep = keep_mask(seed_int, M, N, p)
    full = gemm_compose(a.double(), b.double(), None if bs is None else bs.double(), act)
    check_finite("out", out)
    dropped_nonzero = int(((out != 0) & ~keep).sum())
    if dropped_nonzero:
        raise Failure(f"{dropped_nonzero} elements the mask drops are nonzero "
                      "(mask mismatch vs reference.dropout)")
    kept_zero = int(((out == 0) & keep & (full.abs() > 1e-2)).sum())
    if kept_zero:
        raise Failure(f"{kept_zero} kept elements (|value| > 1e-2) are zero (mask mismatch)")
    frac = 1.0 - float(keep.float().mean())
    notes.add(f"dropfrac={frac:.4f}")
    if abs(frac - p) > 0.01 + 3 * math.sqrt(p * (1 - p) / max(1, M * N)):
        raise Failure(f"dropped fraction {frac:.4f} far from p={p}")
    ref = torch.where(keep, full / (1 - p), torch.zeros_like(full))
    base = gemm_compose(a, b, bs, act, keep=keep, p=p)
    check_close(notes, "kept", out, ref, base, FLOOR[dtype])
    check_equal("same seed", out, call(seed))
    if extra:
        # seed None: reproducible under torch.manual_seed, different without
        torch.manual_seed(1234)
        o1 = call(None)
        torch.manual_seed(1234)
        o2 = call(None)
        o3 = call(None)
        check_equal("seed=None under manual_seed", o1, o2)
        if torch.equal(o1 == 0, o3 == 0):
            raise Failure("seed=None: two unseeded calls gave the same mask")
        # a seed tensor (int32, on the device and on the CPU) gives the int seed's mask
        seed_t = torch.tensor(seed_int, dtype=torch.int64, device=DEV)
        check_equal("int64 device seed tensor", out, call(seed_t))
        check_equal("cpu seed tensor", out, call(torch.tensor([seed_int])))
        check_equal("int32 device seed tensor", call(5), call(torch.tensor(5, dtype=torch.int32, device=DEV)))
        if api == "linear":
            nodrop = call(seed, 0.0)
            check_equal("training=False", nodrop, call(seed, training=False))


def c_gemm_seed_view(notes):
    """A seed tensor that is an unaligned int64 view gives the same output as the int seed (ws dropout
    route)."""
    M = N = K = Z(4096, 64)
    a = rnd(M, K)
    w = rnd(N, K, scale=K ** -0.5)
    bs = rnd(N)
    seeds = torch.tensor([0, 77], dtype=torch.int64, device=DEV)
    o1 = trifuse.linear(a, w, bs, activation="silu", dropout_p=0.1, seed=77)
    o2 = trifuse.linear(a, w, bs, activation="silu", dropout_p=0.1, seed=seeds[1:])
    check_equal("seed view", o1, o2)
    expect_route(notes, "gemm:ws")


def c_gemm_zero(notes, dtype):
    """Zero-size M, N, K forward and backward against fp64 autograd."""
    probs = []
    for (M, N, K) in [(0, 64, 32), (48, 0, 32), (48, 64, 0), (0, 0, 0)]:
        x = rnd(M, K, dtype=dtype).requires_grad_()
        w = rnd(N, K, dtype=dtype).requires_grad_()
        bs = rnd(N, dtype=dtype).requires_grad_()
        out = trifuse.linear(x, w, bs, activation="gelu")
        xr, wr, br = leaf64(x), leaf64(w), leaf64(bs)
        ref = F.gelu(xr @ wr.t() + br)
        do = rnd(M, N, dtype=dtype)
        check_close(notes, f"{M}x{N}x{K}", out, ref, None, FLOOR[dtype])
        g = grads(out, (x, w, bs), do)
        gr = grads(ref, (xr, wr, br), do.double())
        for nm, gt, gref in zip(("dx", "dw", "db"), g, gr):
            if gt is None:
                probs.append(f"{M}x{N}x{K} {nm} None")
                continue
            gref = torch.zeros_like(gt, dtype=FP64) if gref is None else gref
            check_close(notes, f"{nm}", gt, gref, None, FLOOR[dtype])
    if probs:
        raise Failure("; ".join(probs))


# ----------------------------------------------------------------------------------------------------------
# GEMM / linear backward
# ----------------------------------------------------------------------------------------------------------
def c_gemm_bwd(notes, M, N, K, dtype, act, *, api="linear", bias=True, recompute=False, p=0.0, seed=None,
               res=False, out_dtype=None, x3d=None, expect=None, both_recompute=False):
    x = rnd(M, K, dtype=dtype).requires_grad_()
    if api == "linear":
        w = rnd(N, K, dtype=dtype, scale=K ** -0.5).requires_grad_()
    else:
        w = rnd(K, N, dtype=dtype, scale=K ** -0.5).requires_grad_()
    bs = rnd(N, dtype=dtype).requires_grad_() if bias else None
    final = out_dtype or dtype
    r = rnd(M, N, dtype=final).requires_grad_() if res else None
    keep = keep_mask(seed, M, N, p) if p > 0 else None
    do = rnd(M, N, dtype=final)
    leaves = [t for t in (x, w, bs, r) if t is not None]
    names = [n for n, t in zip(("dx", "dw", "dbias", "dres"), (x, w, bs, r)) if t is not None]

    def fwd(rc):
        xx = x if x3d is None else x.view(*x3d, K)
        rr = r if (r is None or x3d is None) else r.view(*x3d, N)
        if api == "linear":
            o = trifuse.linear(xx, w, bs, activation=act, dropout_p=p, seed=seed, residual=rr, recompute=rc)
        else:
            o = trifuse.gemm(xx, w, bs, activation=act, dropout_p=p, seed=seed, residual=rr,
                             out_dtype=out_dtype, recompute=rc)
        return o.reshape(M, N)

    # fp64 reference and torch's own low-precision composition
    l64 = [leaf64(t) for t in leaves]
    x64, w64 = l64[0], l64[1]
    b64 = l64[2] if bias else None
    r64 = l64[-1] if res else None
    bm64 = w64.t() if api == "linear" else w64
    ref = gemm_compose(x64, bm64, b64, act, r64, keep, p)
    gref = grads(ref, l64, do.double())
    full = gemm_compose(x64.detach(), bm64.detach(), None if b64 is None else b64.detach(), act)  # no mask
    lt = [t.detach().clone().requires_grad_() for t in leaves]
    xt, wt = lt[0], lt[1]
    bt = lt[2] if bias else None
    rt = lt[-1] if res else None
    if final == dtype:
        base = gemm_compose(xt, wt.t() if api == "linear" else wt, bt, act, rt, keep, p)
    else:
        base = gemm_compose(xt, wt.t() if api == "linear" else wt, bt, act, None, keep, p, out_dtype=final)
        base = base + rt if rt is not None else base
    gbase = grads(base, lt, do)
    for rc in ((False, True) if both_recompute else (recompute,)):
        TRACE.clear()
        out = fwd(rc)
        if expect:
            expect_route(notes, expect)
        tag = "rc" if rc else ""
        check_close(notes, f"{tag}out", out, ref, base, FLOOR[final] if final == dtype else FLOOR[dtype])
        if keep is not None:
            # the mask the forward used
            recovered = (out.detach() - (r.detach() if r is not None else 0)) != 0
            big = full.abs() > 1e-2
            mism = int(((recovered != keep) & big).sum())
            if mism:
                raise Failure(f"{tag} forward output's zero pattern disagrees with reference.dropout mask "
                              f"at {mism} elems")
        g = grads(out, leaves, do)
        for nm, gt, gr, gb in zip(names, g, gref, gbase):
            if gt is None:
                raise Failure(f"{tag}{nm} is None")
            check_close(notes, f"{tag}{nm}", gt, gr, gb, FLOOR[dtype])
