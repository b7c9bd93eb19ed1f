"""Norm cases: layer_norm, rms_norm and their add_ (residual) forms."""
import torch
import torch.nn.functional as F

import trifuse

from .checks import Failure, check_close, check_equal, grads, leaf64, mk, rnd, sync
from .config import FLOOR, FP64

# ----------------------------------------------------------------------------------------------------------
# norms
# ----------------------------------------------------------------------------------------------------------

def _in_order(tensors, present):
    """tensors (the present ones, in order) back in their slots, None where absent."""
    it = iter(tensors)
    return [next(it) if p else None for p in present]

def c_norm(notes, kind, M, N, dtype, *, w=True, b=True, ib=False, res=False, wdtype=None, layout="contig",
           x_off=0, w_off=0, res_layout="contig", eps="default", bwd=True, determinism=False):
    """kind: layer_norm | rms_norm | add_layer_norm | add_rms_norm."""
    is_rms = "rms" in kind
    wdt = wdtype or dtype
    x = mk((M, N), dtype, layout, x_off, grad=True)
    wt = mk((N,), wdt, "contig", w_off, grad=True) if w else None
    if wt is not None:
        with torch.no_grad():
            wt.add_(1.0)
    bt = mk((N,), wdt, grad=True, scale=0.5) if (b and not is_rms) else None
    ibt = mk((N,), wdt, grad=True, scale=0.5) if ib else None
    rt = mk((M, N), dtype, res_layout, grad=True) if res else None
    if eps == "default":
        eps_v = 1e-6 if is_rms else 1e-5
        kw_eps = {}
    else:
        eps_v = float(torch.finfo(torch.float32).eps) if eps is None else eps
        kw_eps = {"eps": eps}

    def call():
        if kind == "layer_norm":
            return trifuse.layer_norm(x, wt, bt, input_bias=ibt, **kw_eps), None
        if kind == "rms_norm":
            return trifuse.rms_norm(x, wt, input_bias=ibt, **kw_eps), None
        if kind == "add_layer_norm":
            return trifuse.add_layer_norm(x, rt, wt, bt, input_bias=ibt, **kw_eps)
        return trifuse.add_rms_norm(x, rt, wt, input_bias=ibt, **kw_eps)

    y, h = call()
    sync()
    ins = [t for t in (x, wt, bt, ibt, rt) if t is not None]
    names = [n for n, t in zip(("dx", "dw", "db", "dib", "dres"), (x, wt, bt, ibt, rt)) if t is not None]
    present = [t is not None for t in (x, wt, bt, ibt, rt)]
    l64 = [leaf64(t) for t in ins]
    x64, w64, b64, ib64, r64 = _in_order(l64, present)

    def compose(xx, ww, bb, ii, rr, low):
        hh = xx
        if ii is not None:
            hh = hh + ii
        if rr is not None:
            hh = hh + rr
        if low:  # torch in the data's dtype (weights cast to it), its own ops
            h2 = hh.to(dtype)
            w2 = ww.to(dtype) if ww is not None else None
            b2 = bb.to(dtype) if bb is not None else None
            yy = F.rms_norm(h2, (N,), w2, eps_v) if is_rms else F.layer_norm(h2, (N,), w2, b2, eps_v)
            return yy, h2
        if is_rms:
            yy = hh / torch.sqrt((hh * hh).mean(-1, keepdim=True) + eps_v)
        else:
            mu = hh.mean(-1, keepdim=True)
            yy = (hh - mu) / torch.sqrt(((hh - mu) ** 2).mean(-1, keepdim=True) + eps_v)
        if ww is not None:
            yy = yy * ww
        if bb is not None:
            yy = yy + bb
        return yy, hh

    ref_y, ref_h = compose(x64, w64, b64, ib64, r64, False)
    lt = [t.detach().clone().requires_grad_() for t in ins]
    xt, wtt, btt, ibtt, rtt = _in_order(lt, present)
    base_y, base_h = compose(xt, wtt, btt, ibtt, rtt, True)
    fl = FLOOR[dtype]
    if y.dtype != dtype:
        raise Failure(f"y dtype {y.dtype} != x dtype {dtype}")
    check_close(notes, "y", y, ref_y, base_y, fl)
    if h is not None:
        check_close(notes, "h", h, ref_h, base_h, fl)
    if determinism:
        y2, _ = call()
        check_equal("fwd rerun", y, y2)
    if not bwd:
        return
    gy = rnd(M, N, dtype=dtype)
    gh = rnd(M, N, dtype=dtype) if h is not None else None
    outs = (y, h) if h is not None else (y,)
    gouts = (gy, gh) if h is not None else (gy,)
    g = grads(outs, ins, gouts)
    gr = grads((ref_y, ref_h) if h is not None else (ref_y,), l64,
               tuple(t.double() for t in gouts))
    gb = grads((base_y, base_h) if h is not None else (base_y,), lt, gouts)
    for nm, gt, r_, b_ in zip(names, g, gr, gb):
        if gt is None:
            raise Failure(f"{nm} is None")
        if gt.dtype != (wdt if nm in ("dw", "db", "dib") else dtype):
            raise Failure(f"{nm} dtype {gt.dtype}")
        r_ = torch.zeros_like(gt, dtype=FP64) if r_ is None else r_
        check_close(notes, nm, gt, r_, b_, fl)
    if determinism:
        y2, h2 = call()
        g2 = grads((y2, h2) if h2 is not None else (y2,), ins, gouts)
        for nm, a_, b_ in zip(names, g, g2):
            check_equal(f"{nm} rerun", a_, b_)
