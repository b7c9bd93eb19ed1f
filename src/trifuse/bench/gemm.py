"""GEMM + epilogue benchmark: trifuse vs cuBLAS bare x @ w.T, the eager composition, cuBLASLt's fused
epilogue (torch._addmm_activation) and torch.compile max-autotune.

Shapes are (M, K, N): x (M, K), w (N, K), b (N). Errors: the reference is fp32 eager; in dropout cases it
applies trifuse's mask for DROPOUT_SEED (reference.dropout.keep_mask), so eager's and torch.compile's rows,
which draw torch's own mask, show a large error there by design.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import trifuse

from ..analysis.memory import autograd_saved_bytes
from ..ops.gemm import gemm_flops, intermediate_bytes
from ..reference.dropout import keep_mask
from ..reference.gemm import ACTIVATION_FNS, linear_ref
from .providers import compiled, grad_fn, leaf
from .suite import Case, Suite, Unavailable, Work

SEED_SHAPES = [(64, 256, 128), (128, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
               (4096, 4096, 4096), (8192, 8192, 8192)]
LLM_SHAPES = [(8192, 4096, 14336), (8192, 14336, 4096), (16384, 4096, 4096)]
FULL_SHAPES = SEED_SHAPES + LLM_SHAPES
QUICK_SHAPES = [(128, 256, 256), (4096, 4096, 4096), (8192, 4096, 14336)]
CPU_SHAPES = [(64, 64, 64), (100, 70, 50)]
DROPOUT_SEED = 1234  # trifuse's rows use a fixed seed, so the reference can apply the same mask
# epilogue name -> (bias, activation, dropout_p)
EPILOGUES = {
    "none": (False, "none", 0.0),
    "bias+silu": (True, "silu", 0.0),
    "bias+gelu": (True, "gelu", 0.0),
    "bias+gelu_tanh": (True, "gelu_tanh", 0.0),
    "bias+silu+dropout": (True, "silu", 0.1),
}


def cases(*, scale: str, shapes=None, dtype=None, directions=None) -> list[Case]:
    shapes = shapes or {"full": FULL_SHAPES, "quick": QUICK_SHAPES, "cpu": CPU_SHAPES}[scale]
    dtype = dtype or (torch.float32 if scale == "cpu" else torch.bfloat16)
    directions = directions or ["fwd"]
    epis = list(EPILOGUES) if scale != "quick" else ["none", "bias+silu"]
    out = []
    for d in directions:
        for s in shapes:
            # Backward: the bias+silu(+dropout) epilogues only (the targets), to bound run time.
            for e in epis if d == "fwd" else [e for e in epis if "silu" in e]:
                out.append(Case(tuple(s), dtype, d, (("epilogue", e),)))
    return out


def _epi(case: Case):
    return EPILOGUES[case.param("epilogue")]


def inputs(case: Case, device) -> dict:
    m, k, n = case.shape
    has_bias, _, _ = _epi(case)
    x = torch.randn(m, k, device=device, dtype=case.dtype)
    w = torch.randn(n, k, device=device, dtype=case.dtype) / k ** 0.5
    b = torch.randn(n, device=device, dtype=case.dtype) if has_bias else None
    return {"x": x, "w": w, "b": b, "dy": torch.randn(m, n, device=device, dtype=case.dtype)}


def _grad_leaves(inp):
    return [leaf(inp["x"]), leaf(inp["w"])] + ([leaf(inp["b"])] if inp["b"] is not None else [])


def reference(case: Case, inp: dict):
    _, act, p = _epi(case)
    leaves = [t.float() for t in _grad_leaves(inp)]
    leaves = [t.detach().requires_grad_(True) for t in leaves]
    b = leaves[2] if len(leaves) > 2 else None
    y = linear_ref(leaves[0], leaves[1], b, act)
    if p > 0:
        m, _, n = case.shape
        y = y * keep_mask(DROPOUT_SEED, m, n, p, y.device).float() / (1 - p)
    if case.direction == "fwd":
        return y.detach()
    return torch.autograd.grad(y, leaves, inp["dy"].float())


def _forwards(case: Case):
    """(trifuse's, eager's) forward x, w, b -> y for the case's epilogue."""
    _, act, p = _epi(case)

    def ours(x, w, b):
        return trifuse.linear(x, w, b, activation=act, dropout_p=p, seed=DROPOUT_SEED if p > 0 else None)

    def eager(x, w, b):
        y = ACTIVATION_FNS[act](F.linear(x, w, b))
        return F.dropout(y, p, training=True) if p > 0 else y

    return ours, eager


def providers(case: Case) -> dict:
    _, act, p = _epi(case)
    ours, eager = _forwards(case)

    def bare():
        return lambda x, w, b: x @ w.t()  # backward: its two GEMMs (grads of x and w only)

    def addmm_act():
        if case.direction != "fwd":
            raise Unavailable("forward only here")
        if act not in ("gelu", "gelu_tanh", "none") or p > 0:
            raise Unavailable("cuBLASLt's fused epilogue has relu/gelu only, no dropout")
        if act == "none":
            raise Unavailable("no epilogue to fuse")
        return lambda x, w, b: torch._addmm_activation(b, x, w.t(), use_gelu=True)

    def compile_fn():
        if tuple(case.shape) not in [tuple(s) for s in (*LLM_SHAPES, (8192, 8192, 8192))]:
            raise Unavailable("compiled only for 8192^3 and the LLM shapes (compile time)")
        if case.param("epilogue") != "bias+silu" or case.direction != "fwd":
            raise Unavailable("max-autotune compiled for the fwd bias+silu epilogue only (compile time)")
        return compiled(eager, mode="max-autotune-no-cudagraphs")

    makers = {"trifuse": lambda: ours, "cublas_bare": bare, "eager": lambda: eager,
              "addmm_activation": addmm_act, "compile": compile_fn}

    def build(make):
        def builder(inp):
            f = make()
            if case.direction == "fwd":
                x, w, b = inp["x"], inp["w"], inp["b"]
                return lambda: f(x, w, b)
            leaves = _grad_leaves(inp)
            b = leaves[2] if len(leaves) > 2 else None
            wrt = leaves[:2] if make is bare else leaves
            run = lambda: f(leaves[0], leaves[1], b)
            fn = grad_fn(case.direction, run, wrt, inp["dy"])
            if len(wrt) < len(leaves):  # bare matmul: no bias gradient
                return lambda: (*fn(), None)
            return fn

        return builder

    out = {name: build(make) for name, make in makers.items()}
    return out


def measured(case: Case, inp: dict) -> dict:
    """Activation memory per layer for the backward directions: the bytes the autograd graph keeps after
    trifuse's forward and after eager's (x and w included in both)."""
    if case.direction == "fwd":
        return {}
    out = {}
    for name, forward in zip(("graph_mb", "graph_mb_eager"), _forwards(case)):
        leaves = _grad_leaves(inp)
        b = leaves[2] if len(leaves) > 2 else None
        nbytes, y = autograd_saved_bytes(forward, leaves[0], leaves[1], b)
        out[name] = nbytes / 2**20
        del y, leaves
    return out


def work(case: Case) -> Work:
    m, k, n = case.shape
    return Work(flops=gemm_flops(m, n, k, case.direction))


def extras(case: Case) -> dict:
    m, _, n = case.shape
    _, act, p = _epi(case)
    return {"intermediate_bytes_saved": intermediate_bytes(m, n, case.dtype.itemsize, activation=act,
                                                           dropout=p > 0)}


SUITE = Suite(
    name="gemm", bound="compute", cases=cases, inputs=inputs, providers=providers, reference=reference,
    work=work, extras=extras, measured=measured, shape_dims=("M", "K", "N"),
    notes=[("Shapes are M x K x N: x (M, K) @ w (N, K).T + b (N). TFLOP/s counts 2*M*N*K per GEMM "
            "(fwd 1, bwd 2, fwd+bwd 3 GEMMs); cublas_bare is x @ w.T with no epilogue (the time to beat)."),
           ("Dropout cases: the reference applies trifuse's mask (reference.dropout.keep_mask, a fixed "
            "seed); eager and torch.compile draw torch's own mask, so their max err there is large by design."),
           ("graph MiB (backward directions): bytes the autograd graph keeps after one forward (x and w "
            "included), trifuse's and, in brackets, eager's: the activation memory of one layer."),
           ("intermediate_bytes_saved: (M, N) tensors the eager composition allocates that the fused "
            "forward never writes (plus dropout's 1-byte mask).")],
)
