"""GEMM-with-epilogue oracles: the eager composition, in any dtype (fp32/fp64 for references)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATION_FNS = {
    "none": lambda x: x,
    "relu": F.relu,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu2": lambda x: F.relu(x).square(),
    "leaky_relu": F.leaky_relu,
}


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, activation: str = "none",
               dropout_p: float = 0.0, residual: torch.Tensor | None = None, dtype=None) -> torch.Tensor:
    """dropout(act(x @ weight.T + bias)) + residual, eager (torch's own dropout mask: not trifuse's).

    dtype: compute in this dtype (e.g. torch.float64 for an oracle); None keeps the inputs' dtype.
    """
    if dtype is not None:
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        residual = residual.to(dtype) if residual is not None else None
    y = ACTIVATION_FNS[activation](F.linear(x, weight, bias))
    if dropout_p > 0:
        y = F.dropout(y, dropout_p, training=True)
    return y + residual if residual is not None else y
