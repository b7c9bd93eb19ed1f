"""Shared by the GEMM test files: the fp64 oracle and the comparison every forward test makes."""
import torch

import trifuse
from helpers import assert_close_to_ref
from trifuse.reference.gemm import ACTIVATION_FNS

FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
ACT_FNS = ACTIVATION_FNS  # the oracle's table: one definition of each activation in torch


# fp64 oracles that keep the lower tails: F.gelu's 1 + erf(x / sqrt 2) and the tanh form's 1 + tanh(u)
# cancel to 0 there, even in fp64.
TAIL_EXACT = {
    "gelu": lambda x: x * 0.5 * torch.special.erfc(-x / 2 ** 0.5),
    "gelu_tanh": lambda x: x * torch.sigmoid(2 * (2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)),
}


def torch_gemm(a, b, bias=None, activation="none", residual=None):
    pre = a @ b
    if bias is not None:
        pre = pre + bias
    y = ACT_FNS[activation](pre)
    return y + residual if residual is not None else y


def check(a, b, bias=None, activation="none", residual=None, **kw):
    out = trifuse.gemm(a, b, bias, activation=activation, residual=residual, **kw)
    dbl = [t.double() if t is not None else None for t in (a, b, bias, residual)]
    ref = torch_gemm(*dbl[:3], activation, dbl[3])
    theirs = torch_gemm(a, b, bias, activation, residual) if a.device.type == "cuda" or a.dtype == torch.float32 \
        else torch_gemm(a.float(), b.float(), None if bias is None else bias.float(), activation,
                        None if residual is None else residual.float()).to(a.dtype)
    assert out.dtype == (kw.get("out_dtype") or a.dtype)
    assert_close_to_ref(out, ref, theirs, floor=FLOOR[a.dtype])
    return out
