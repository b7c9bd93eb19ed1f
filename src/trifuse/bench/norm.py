"""LayerNorm / RMSNorm benchmark: trifuse, torch eager, torch.compile, Liger-Kernel.

Kinds (the case's `kind` param): layer_norm (weight, bias), bias_layer_norm (LN(x + input_bias), the
seeds' fused bias + LayerNorm), rms_norm (weight), add_rms_norm (h = x + residual, y = RMSNorm(h),
both returned: the pre-norm transformer block).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import trifuse

from ..ops.norm_traffic import naive_norm_bytes, norm_bytes
from ..reference.norm import layer_norm_ref, rms_norm_ref
from .providers import compiled, grad_fn, leaf, peer
from .suite import Case, Suite, Unavailable, Work

LLM_SHAPES = [(4096, 4096), (16384, 4096), (8192, 8192), (32768, 2048), (8192, 512)]
# The seeds' examples, each in its own dtype: B rows x N features.
SEED_CASES = [((512, 8192), torch.float32), ((8192, 512), torch.float16)]
QUICK_SHAPES = [(16384, 4096), (8192, 512)]
CPU_SHAPES = [(64, 100), (4, 5000)]
KINDS = ["layer_norm", "bias_layer_norm", "rms_norm", "add_rms_norm"]
LN_EPS, RMS_EPS = 1e-5, 1e-6


def cases(*, scale: str, shapes=None, dtype=None, directions=None) -> list[Case]:
    directions = directions or (["fwd"] if scale != "full" else ["fwd", "bwd"])
    if scale == "cpu":
        kinds = KINDS
    elif scale == "quick":
        kinds = ["bias_layer_norm", "rms_norm"]
    else:
        kinds = KINDS
    pairs = [(s, dtype or (torch.float32 if scale == "cpu" else torch.bfloat16))
             for s in (shapes or {"full": LLM_SHAPES, "quick": QUICK_SHAPES, "cpu": CPU_SHAPES}[scale])]
    if scale == "full" and not shapes:
        pairs = [(s, dtype or dt) for s, dt in SEED_CASES] + pairs
    return [Case(s, dt, d, (("kind", k),)) for d in directions for k in kinds for s, dt in pairs]


def inputs(case: Case, device) -> dict:
    m, n = case.shape
    dt = case.dtype

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(shape, device=device) * scale + shift).to(dt)

    return {"x": rnd(m, n, scale=2.0), "w": rnd(n, scale=0.5, shift=1.0), "b": rnd(n, scale=0.5),
            "ib": rnd(n, scale=0.5), "res": rnd(m, n), "dy": rnd(m, n), "dh": rnd(m, n)}


def _spec(kind: str):
    """(names of the differentiable inputs, number of outputs) of a kind."""
    return {
        "layer_norm": (["x", "w", "b"], 1),
        "bias_layer_norm": (["x", "ib", "w", "b"], 1),
        "rms_norm": (["x", "w"], 1),
        "add_rms_norm": (["x", "res", "w"], 2),
    }[kind]


def _eager(kind: str):
    def layer_norm(x, w, b):
        return F.layer_norm(x, (x.shape[-1],), w, b, LN_EPS)

    def bias_layer_norm(x, ib, w, b):
        return F.layer_norm(x + ib, (x.shape[-1],), w, b, LN_EPS)

    def rms_norm(x, w):
        return F.rms_norm(x, (x.shape[-1],), w, RMS_EPS)

    def add_rms_norm(x, res, w):
        h = x + res
        return F.rms_norm(h, (x.shape[-1],), w, RMS_EPS), h

    return {"layer_norm": layer_norm, "bias_layer_norm": bias_layer_norm, "rms_norm": rms_norm,
            "add_rms_norm": add_rms_norm}[kind]


def _ours(kind: str):
    return {
        "layer_norm": lambda x, w, b: trifuse.layer_norm(x, w, b, LN_EPS),
        "bias_layer_norm": lambda x, ib, w, b: trifuse.layer_norm(x, w, b, LN_EPS, input_bias=ib),
        "rms_norm": lambda x, w: trifuse.rms_norm(x, w, RMS_EPS),
        "add_rms_norm": lambda x, res, w: trifuse.add_rms_norm(x, res, w, RMS_EPS),
    }[kind]


def _liger(kind: str):
    # Liger's apply() signatures (read from linkedin/Liger-Kernel src/liger_kernel/ops):
    # LigerLayerNormFunction.apply(X, W, B, eps); LigerRMSNormFunction.apply(X, W, eps, offset,
    # casting_mode, in_place); LigerFusedAddRMSNormFunction.apply(X, R, W, eps, offset, casting_mode,
    # in_place) -> (Y, S). in_place=False: Liger's in-place backward overwrites dy, which the timing
    # loop reuses.
    if kind in ("layer_norm", "bias_layer_norm"):
        fn = peer("liger_kernel.ops.layer_norm", "LigerLayerNormFunction")
        if kind == "layer_norm":
            return lambda x, w, b: fn.apply(x, w, b, LN_EPS)
        return lambda x, ib, w, b: fn.apply(x + ib, w, b, LN_EPS)
    if kind == "rms_norm":
        fn = peer("liger_kernel.ops.rms_norm", "LigerRMSNormFunction")
        return lambda x, w: fn.apply(x, w, RMS_EPS, 0.0, "llama", False)
    fn = peer("liger_kernel.ops.fused_add_rms_norm", "LigerFusedAddRMSNormFunction")
    return lambda x, res, w: tuple(fn.apply(x, res, w, RMS_EPS, 0.0, "llama", False))


def _grad_outs(kind: str, inp: dict) -> list[torch.Tensor]:
    return [inp["dy"], inp["dh"]][: _spec(kind)[1]]


def reference(case: Case, inp: dict):
    kind = case.param("kind")
    names, _ = _spec(kind)
    args = {k: leaf(inp[k].float()) for k in names}
    f32 = torch.float32
    if kind == "layer_norm":
        out = layer_norm_ref(args["x"], args["w"], args["b"], LN_EPS, dtype=f32)
    elif kind == "bias_layer_norm":
        out = layer_norm_ref(args["x"], args["w"], args["b"], LN_EPS, input_bias=args["ib"], dtype=f32)
    elif kind == "rms_norm":
        out = rms_norm_ref(args["x"], args["w"], RMS_EPS, dtype=f32)
    else:
        out = rms_norm_ref(args["x"], args["w"], RMS_EPS, residual=args["res"], dtype=f32)
    outs = list(out) if isinstance(out, tuple) else [out]
    if case.direction == "fwd":
        return tuple(o.detach() for o in outs) if len(outs) > 1 else outs[0].detach()
    return torch.autograd.grad(outs, [args[k] for k in names], [g.float() for g in _grad_outs(kind, inp)])


def providers(case: Case) -> dict:
    kind = case.param("kind")
    names, _ = _spec(kind)
    makers = {
        "trifuse": lambda: _ours(kind),
        "torch": lambda: _eager(kind),
        "compile": lambda: compiled(_eager(kind)),
        "liger": lambda: _liger(kind),
    }

    def build(make):
        def builder(inp):
            f = make()
            if case.direction == "fwd":
                args = [inp[k] for k in names]
                return lambda: f(*args)
            args = [leaf(inp[k]) for k in names]
            try:
                return grad_fn(case.direction, lambda: f(*args), args, _grad_outs(kind, inp))
            except TypeError as e:  # a peer whose signature changed
                raise Unavailable(f"{type(e).__name__}: {e}") from None

        return builder

    return {name: build(make) for name, make in makers.items()}


def _flags(case: Case) -> dict:
    kind = case.param("kind")
    return {"input_bias": kind == "bias_layer_norm", "residual": kind == "add_rms_norm",
            "bias": "layer_norm" in kind}


def work(case: Case) -> Work:
    m, n = case.shape
    return Work(bytes=norm_bytes(m, n, case.dtype.itemsize, case.direction, **_flags(case)))


def naive_bytes(case: Case) -> float:
    m, n = case.shape
    return naive_norm_bytes(m, n, case.dtype.itemsize, case.direction, **_flags(case))


SUITE = Suite(
    name="norm", bound="memory", cases=cases, inputs=inputs, providers=providers,
    reference=reference, work=work, naive_bytes=naive_bytes, shape_dims=("M", "N"),
    notes=[("GB/s counts one read of each input and one write of each output: fwd x (+ residual), y "
           "(+ h); bwd x or h, dy (+ dh), dx; plus the N-element weight/bias vectors."),
           "bias_layer_norm is LN(x + b): eager and Liger run the add as a separate kernel."],
)
