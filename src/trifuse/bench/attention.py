"""Attention benchmark: trifuse against SDPA's backends (FLASH = FA2, cuDNN, EFFICIENT, MATH) and the
naive composition that materializes the S x S scores. Shape (B, Hq, S, D), Sq = Skv = S."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import trifuse

from ..ops.attention_plan import attention_flops
from ..reference.attention import attention_grads_ref, attention_ref, naive_attention
from .providers import grad_fn, leaf
from .suite import Case, Suite, Unavailable, Work

TOKENS = 16384
SEQS = (512, 1024, 2048, 4096, 8192, 16384)
NAIVE_MAX_BYTES = 8 * 2**30  # the naive path's fp32 S x S scores beyond this: Unavailable
MATH_MAX_SEQ = 4096  # SDPA's MATH backend materializes S x S too; beyond this it only measures OOM
REF_CHUNK_BYTES = 2**30  # fp32 reference: query rows per chunk so one chunk's scores stay ~1 GiB


def _case(b, hq, s, d, causal, hkv, direction, dtype) -> Case:
    return Case((b, hq, s, d), dtype, direction, (("causal", causal), ("hkv", hkv)))


def cases(*, scale: str, shapes=None, dtype=None, directions=None) -> list[Case]:
    dtype = dtype or (torch.float32 if scale == "cpu" else torch.bfloat16)
    if shapes:  # --shapes BxHxSxD: non-causal and causal, Hkv = Hq
        dirs = directions or ["fwd", "bwd"]
        return [_case(*shape, c, shape[1], d, dtype) for d in dirs for shape in shapes for c in (False, True)]
    if scale == "cpu":
        dirs = directions or ["fwd", "bwd"]
        return [_case(1, 2, 64, 32, c, hkv, d, dtype) for d in dirs for c, hkv in ((False, 2), (True, 1))]
    if scale == "quick":
        dirs = directions or ["fwd"]
        return [_case(4, 16, 4096, 128, c, h, d, dtype) for d in dirs for c, h in ((False, 16), (True, 16))] + \
            [_case(8, 16, 2048, 128, True, 2, d, dtype) for d in dirs]
    dirs = directions or ["fwd", "bwd"]
    out = []
    for d in dirs:
        # D = 128, Hq = 16 (Hq * D = 2048 as in ANCHORS.md), every S, causal and not: 24 cases.
        out += [_case(TOKENS // s, 16, s, 128, c, 16, d, dtype) for c in (False, True) for s in SEQS]
        # D = 64, Hq = 32: 8 cases.
        out += [_case(TOKENS // s, 32, s, 64, c, 32, d, dtype) for c in (False, True) for s in (2048, 8192)]
        # GQA 8:1 at D = 128: 6 cases.
        out += [_case(TOKENS // s, 16, s, 128, c, 2, d, dtype) for c, s in ((True, 2048), (True, 8192), (False, 4096))]
    return out


def _params(case: Case):
    b, hq, s, d = case.shape
    return b, hq, s, d, case.param("causal"), case.param("hkv")


def inputs(case: Case, device) -> dict:
    b, hq, s, d, _, hkv = _params(case)
    q = torch.randn(b, hq, s, d, device=device, dtype=case.dtype)
    k = torch.randn(b, hkv, s, d, device=device, dtype=case.dtype)
    v = torch.randn(b, hkv, s, d, device=device, dtype=case.dtype)
    return {"q": q, "k": k, "v": v, "do": torch.randn_like(q)}


def reference(case: Case, inp: dict):
    """fp32, chunked over query rows (never all of S x S at once), at every S."""
    b, hq, s, _d, causal, _ = _params(case)
    chunk = max(16, REF_CHUNK_BYTES // (4 * b * hq * s))
    q, k, v = inp["q"], inp["k"], inp["v"]
    if case.direction == "fwd":
        return attention_ref(q, k, v, causal=causal, dtype=torch.float32, chunk=chunk)
    return attention_grads_ref(q, k, v, inp["do"], causal=causal, dtype=torch.float32, chunk=chunk)


def _sdpa(backend_name: str, causal: bool, gqa: bool):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def f(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    return f


@contextlib.contextmanager
def _unavailable_on_error(what: str):
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:  # "No available kernel", an unsupported GQA/dtype/head-dim combination
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unavailable(f"{what}: {first[:120]}") from None


def providers(case: Case) -> dict:
    b, hq, s, _d, causal, hkv = _params(case)
    gqa = hkv != hq

    def naive():
        if b * hq * s * s * 4 > NAIVE_MAX_BYTES:
            raise Unavailable(f"S x S scores would take {b * hq * s * s * 4 / 2**30:.0f} GiB")
        return lambda q, k, v: naive_attention(q, k, v, causal=causal)

    def sdpa(name):
        def make():
            if name == "MATH" and s > MATH_MAX_SEQ:
                raise Unavailable(f"MATH materializes S x S; run only where S <= {MATH_MAX_SEQ}")
            return _sdpa(name, causal, gqa)

        return make

    makers = {
        "trifuse": lambda: lambda q, k, v: trifuse.attention(q, k, v, causal=causal),
        "sdpa_flash": sdpa("FLASH_ATTENTION"),
        "sdpa_cudnn": sdpa("CUDNN_ATTENTION"),
        "sdpa_efficient": sdpa("EFFICIENT_ATTENTION"),
        "sdpa_math": sdpa("MATH"),
        "naive": naive,
    }

    def build(name, make):
        def builder(inp):
            f = make()
            with _unavailable_on_error(name):
                if case.direction == "fwd":
                    q, k, v = inp["q"], inp["k"], inp["v"]
                    f(q, k, v)  # probe: a backend that rejects the case says so here
                    return lambda: f(q, k, v)
                q, k, v = leaf(inp["q"]), leaf(inp["k"]), leaf(inp["v"])
                bwd = grad_fn(case.direction, lambda: f(q, k, v), [q, k, v], inp["do"])
                bwd()
                return bwd

        return builder

    return {name: build(name, make) for name, make in makers.items()}


def work(case: Case) -> Work:
    b, hq, s, d, causal, _ = _params(case)
    return Work(flops=attention_flops(b, hq, s, s, d, causal, case.direction))


SUITE = Suite(
    name="attention", bound="compute", cases=cases, inputs=inputs, providers=providers,
    reference=reference, work=work, shape_dims=("B", "H", "S", "D"),
    notes=[
        "shape is B x Hq x S x D with Sq = Skv = S; hkv = KV heads (hkv < Hq: GQA).",
        "FLOPs: fwd 4*B*Hq*S*S*D (halved when causal), bwd 2.5x fwd; bwd rows time the backward alone.",
        ("max_abs_err against an fp32 reference computed in query chunks (fwd: softmax(qk^T)v; bwd: "
        "analytic gradients), at every S."),
        "sdpa_* force one SDPA backend; 'skipped' says why a backend rejects a case (e.g. GQA).",
        "naive materializes the S x S scores (skipped past 8 GiB); peak_mem_mb shows O(S) vs O(S^2).",
    ],
)
