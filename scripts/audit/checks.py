"""Numeric checks against a high-precision reference, and the tensor makers the cases share."""
import torch

from .config import BF16, DEV


class Failure(AssertionError):
    pass


# ----------------------------------------------------------------------------------------------------------
# numerics helpers
# ----------------------------------------------------------------------------------------------------------
def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def max_err(a, ref) -> float:
    """max |a - ref| over positions where ref is finite (non-finite positions are checked separately)."""
    if a.numel() == 0:
        return 0.0
    a = a.detach().double()
    ref = ref.detach().double()
    fin = torch.isfinite(ref)
    d = (a - ref).abs()
    d = torch.where(fin, d, torch.zeros_like(d))
    d = torch.nan_to_num(d, nan=float("inf"))
    return float(d.max())


def check_close(notes, what, out, ref, base=None, floor=1e-2, factor=2.0):
    """out vs ref (high precision). budget = max(factor * err(base, ref), floor * max(1, max|ref|)).
    Positions where ref is non-finite must match in kind (NaN / +inf / -inf); out must be finite elsewhere."""
    if tuple(out.shape) != tuple(ref.shape):
        raise Failure(f"{what}: shape {tuple(out.shape)} != ref {tuple(ref.shape)}")
    o = out.detach().double()
    r = ref.detach().double()
    if o.numel() == 0:
        notes.add(f"{what}:empty-ok")
        return
    rf = torch.isfinite(r)
    of = torch.isfinite(o)
    bad_nf = (~of & rf)
    if bad_nf.any():
        idx = torch.nonzero(bad_nf)[:3].tolist()
        raise Failure(f"{what}: {int(bad_nf.sum())} non-finite values where the reference is finite, "
                      f"e.g. at {idx} ({o[tuple(torch.nonzero(bad_nf)[0].tolist())].item()})")
    if (~rf).any():
        same = (torch.isnan(o) == torch.isnan(r)) & (torch.isinf(o) == torch.isinf(r)) & \
               ((o == r) | torch.isnan(r) | rf)
        if not bool(same.all()):
            idx = torch.nonzero(~same)[:3].tolist()
            raise Failure(f"{what}: non-finite pattern differs from the reference at {idx}")
    err = max_err(o, r)
    scale = max(1.0, float(torch.where(rf, r.abs(), torch.zeros_like(r)).max()))
    budget = floor * scale
    berr = None
    if base is not None:
        berr = max_err(base, r)
        budget = max(budget, factor * berr)
    notes.add(f"{what}:{err:.2e}/{budget:.2e}")
    if not err <= budget:
        d = torch.where(rf, (o - r).abs(), torch.zeros_like(r))
        nbad = int((d > budget).sum())
        i = tuple(torch.nonzero(d == d.max())[0].tolist())
        torch_err = berr if berr is None else f"{berr:.2e}"
        raise Failure(f"{what}: max err {err:.3e} > budget {budget:.3e} (torch err {torch_err},"
                      f" {nbad} elems over; worst at {list(i)}: got {o[i].item():.5g} ref {r[i].item():.5g})")


def check_equal(what, a, b):
    if not torch.equal(a, b):
        n = int((a != b).sum()) if a.shape == b.shape else -1
        raise Failure(f"{what}: not bitwise identical ({n} elements differ)")


def check_finite(what, t):
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise Failure(f"{what}: {int((~torch.isfinite(t)).sum())} non-finite values")


def rnd(*shape, dtype=BF16, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).to(dtype)


def mk(shape, dtype, layout="contig", offset=0, scale=1.0, grad=False):
    """A 2-D (or 1-D for 'contig'/'expand') tensor of logical `shape`, stored per `layout`:
    contig | t (stored transposed) | padN (rows N elements longer, sliced) | expand (stride-0 rows /
    elements), `offset` elements past an allocation's start (breaks 16-byte alignment for odd offsets).
    grad: the storage is a leaf that requires grad; the returned tensor is a view of it (differentiate
    w.r.t. the view)."""
    shape = tuple(shape)
    if layout == "contig":
        st_shape = shape
    elif layout == "t":
        st_shape = shape[::-1]
    elif layout.startswith("pad"):
        st_shape = (*shape[:-1], shape[-1] + int(layout[3:]))
    elif layout == "expand":
        st_shape = (1,) * len(shape) if len(shape) == 1 else (1, *shape[1:])
    else:
        raise ValueError(layout)
    data = (torch.randn(st_shape, device=DEV) * scale).to(dtype)
    if offset:
        buf = torch.zeros(data.numel() + offset, dtype=dtype, device=DEV)
        buf[offset:].copy_(data.reshape(-1))
        if grad:
            buf.requires_grad_(True)
        st = buf[offset:].view(st_shape)
    else:
        if grad:
            data.requires_grad_(True)
        st = data
    if layout == "t":
        return st.t()
    if layout.startswith("pad"):
        return st[..., :shape[-1]]
    if layout == "expand":
        return st.expand(shape)
    return st


def leaf64(t):
    return t.detach().double().requires_grad_(True)


def grads(outs, inputs, gouts):
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    gouts = gouts if isinstance(gouts, (tuple, list)) else (gouts,)
    return torch.autograd.grad(outs, inputs, gouts, allow_unused=True)
