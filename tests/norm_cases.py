"""Shared by the norm tests: input builders, the calls into trifuse and the fp64 oracle, and `check`."""
import torch

import trifuse
from helpers import assert_close_to_ref
from trifuse.reference.norm import layer_norm_ref, rms_norm_ref

FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
KINDS = ["layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"]

def _rand(shape, device, dtype, scale=1.0, shift=0.0):
    return (torch.randn(shape, device=device) * scale + shift).to(dtype)


def make_inputs(kind, shape, device, dtype, *, weight=True, bias=True, input_bias=True, w_dtype=None):
    n = shape[-1]
    w_dtype = w_dtype or dtype
    is_rms = "rms" in kind
    return {
        "x": _rand(shape, device, dtype, 2.0, 0.5),
        "weight": _rand(n, device, w_dtype, 0.5, 1.0) if weight else None,
        "bias": _rand(n, device, w_dtype, 0.5) if bias and not is_rms else None,
        "input_bias": _rand(n, device, dtype, 0.5) if input_bias else None,
        "residual": _rand(shape, device, dtype, 1.0) if kind.startswith("add") else None,
    }


def call_ours(kind, t):
    kw = {"input_bias": t["input_bias"]}
    fn = getattr(trifuse, kind)
    if kind == "layer_norm":
        return fn(t["x"], t["weight"], t["bias"], **kw)
    if kind == "rms_norm":
        return fn(t["x"], t["weight"], **kw)
    if kind == "add_layer_norm":
        return fn(t["x"], t["residual"], t["weight"], t["bias"], **kw)
    return fn(t["x"], t["residual"], t["weight"], **kw)


def call_ref(kind, t, dtype):
    kw = {"input_bias": t["input_bias"], "residual": t["residual"], "dtype": dtype}
    if "rms" in kind:
        return rms_norm_ref(t["x"], t["weight"], 1e-6, **kw)
    return layer_norm_ref(t["x"], t["weight"], t["bias"], 1e-5, **kw)


def leaves(t, dtype=None):
    return {k: (v.to(dtype) if dtype else v).detach().clone().requires_grad_() if v is not None else None
            for k, v in t.items()}


def check(kind, t, floor=None, grads=True):
    """Forward and every gradient against fp64, with a budget of 2x torch's own same-dtype error."""
    floor = floor or FLOOR[t["x"].dtype]
    names = [k for k, v in t.items() if v is not None]
    runs = []
    for dtype in (None, None, torch.float64):  # ours, torch in the same dtype, fp64 reference
        lv = leaves(t, dtype)
        out = call_ours(kind, lv) if not runs else call_ref(kind, lv, dtype)
        runs.append((lv, out if isinstance(out, tuple) else (out,)))
    (ours_in, ours), (torch_in, theirs), (ref_in, ref) = runs
    for i, (o, r, th) in enumerate(zip(ours, ref, theirs)):
        assert o.dtype == t["x"].dtype
        assert_close_to_ref(o, r, th, floor=floor, what=f"{kind} output {i}")
    if not grads:
        return
    douts = [torch.randn_like(o) for o in ours]
    g_ours = torch.autograd.grad(ours, [ours_in[k] for k in names], douts)
    g_torch = torch.autograd.grad(theirs, [torch_in[k] for k in names], douts)
    g_ref = torch.autograd.grad(ref, [ref_in[k] for k in names], [d.double() for d in douts])
    for k, go, gt, gr in zip(names, g_ours, g_torch, g_ref):
        assert go.dtype == t[k].dtype, f"d{k} dtype"
        assert_close_to_ref(go, gr, gt, floor=floor, what=f"{kind} d{k}")
