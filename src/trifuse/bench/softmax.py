"""Softmax / log-softmax benchmark: trifuse, torch eager, torch.compile, the naive composition, Liger."""
from __future__ import annotations

import torch

import trifuse

from ..ops.softmax import naive_softmax_bytes, softmax_bytes
from ..reference.softmax import naive_softmax, softmax_ref
from .providers import compiled, grad_fn, leaf, peer
from .suite import Case, Suite, Work

FULL_SHAPES = [(4096, 4096), (8192, 8192), (16384, 4096), (4096, 32768), (2048, 65536),
               (1024, 131072), (512, 262144), (8192, 512), (16384, 1024)]
QUICK_SHAPES = [(4096, 4096), (8192, 512), (1024, 131072)]
CPU_SHAPES = [(64, 100), (4, 40000)]


def cases(*, scale: str, shapes=None, dtype=None, directions=None) -> list[Case]:
    shapes = shapes or {"full": FULL_SHAPES, "quick": QUICK_SHAPES, "cpu": CPU_SHAPES}[scale]
    dtype = dtype or (torch.float32 if scale == "cpu" else torch.bfloat16)
    directions = directions or (["fwd"] if scale != "full" else ["fwd", "bwd"])
    out = [Case(s, dtype, d, (("fn", "softmax"),)) for d in directions for s in shapes]
    if scale == "full":
        out += [Case((8192, 8192), dtype, d, (("fn", "log_softmax"),)) for d in directions]
    return out


def inputs(case: Case, device) -> dict:
    x = torch.randn(case.shape, device=device, dtype=case.dtype) * 3
    return {"x": x, "dy": torch.randn_like(x)}


def _log(case: Case) -> bool:
    return case.param("fn") == "log_softmax"


def reference(case: Case, inp: dict):
    x = leaf(inp["x"].float())
    y = softmax_ref(x, log=_log(case), dtype=torch.float32)
    if case.direction == "fwd":
        return y.detach()
    return torch.autograd.grad(y, x, inp["dy"].float())


def providers(case: Case) -> dict:
    log = _log(case)
    ours = trifuse.log_softmax if log else trifuse.softmax
    eager = torch.log_softmax if log else torch.softmax

    def naive(x, dim):
        y = naive_softmax(x, dim)
        return y.log() if log else y

    def liger_fn():
        if log:
            from .suite import Unavailable

            raise Unavailable("Liger has no log_softmax")
        fn = peer("liger_kernel.ops.softmax", "LigerSoftmaxFunction")
        return lambda x, dim: fn.apply(x)

    makers = {
        "trifuse": lambda: ours,
        "torch": lambda: eager,
        "compile": lambda: compiled(eager),
        "naive": lambda: naive,
        "liger": liger_fn,
    }

    def build(make):
        def builder(inp):
            f = make()
            if case.direction == "fwd":
                x = inp["x"]
                return lambda: f(x, -1)
            x = leaf(inp["x"])
            return grad_fn(case.direction, lambda: f(x, -1), [x], inp["dy"])

        return builder

    return {name: build(make) for name, make in makers.items()}


def work(case: Case) -> Work:
    m, n = case.shape
    return Work(bytes=softmax_bytes(m, n, case.dtype.itemsize, case.direction))


def naive_bytes(case: Case) -> float:
    m, n = case.shape
    log = case.param("fn") == "log_softmax"
    return naive_softmax_bytes(m, n, case.dtype.itemsize, case.direction, log=log)


SUITE = Suite(
    name="softmax", bound="memory", cases=cases, inputs=inputs, providers=providers,
    reference=reference, work=work, naive_bytes=naive_bytes, shape_dims=("M", "N"),
    notes=["GB/s counts one read of the inputs and one write of the outputs (fwd: x, y; bwd: y, dy, dx)."],
)
