"""trifuse.layer_norm, rms_norm, add_layer_norm, add_rms_norm: over the last dim, any leading dims."""
from __future__ import annotations

import math
import numbers

import torch

from .._checks import FLOAT_DTYPES, PLAIN_TENSORS, check_float, check_shape, check_tensor
from ..library.norm import norm_fwd
from ..runtime import check_kernel_device, kernel_devices_ok
from ._rows import as_rows, from_rows


def _check_eps(name: str, eps) -> float:
    if eps is None:  # torch's RMSNorm default: the machine epsilon of the type it computes in, fp32 for every
        return float(torch.finfo(torch.float32).eps)  # dtype trifuse takes (fp16's own would be ~1e-3)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):  # numpy scalars too, as torch takes
        raise TypeError(f"trifuse.{name}: eps must be a float, got {type(eps).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"trifuse.{name}: eps must be finite and >= 0, got {eps}")
    return eps


def _check(name, x, residual, weight, bias, input_bias, eps) -> float:
    """Every check of the user's input, each raising its typed error; returns eps as a float."""
    check_tensor(name, "x", x)
    check_float(name, "x", x)
    if x.dim() == 0:
        raise ValueError(f"trifuse.{name}: x must have at least 1 dim (normalized over the last), got 0")
    n = x.shape[-1]
    for arg, t in (("weight", weight), ("bias", bias), ("input_bias", input_bias)):
        if t is not None:
            check_float(name, arg, t)
            check_shape(name, arg, t, (n,))
    if residual is not None:
        check_float(name, "residual", residual)
        check_shape(name, "residual", residual, tuple(x.shape))
    eps = _check_eps(name, eps)
    check_kernel_device(name, x, weight, bias, input_bias, residual)
    return eps


def _valid(x, residual, weight, bias, input_bias, eps) -> bool:
    """True only when every check of _check passes and eps is already a float: the common eager call in
    one pass. False sends the call through _check, which raises the typed error or passes."""
    if type(x) not in PLAIN_TENSORS or x.dtype not in FLOAT_DTYPES or type(eps) is not float:
        return False
    if not 0.0 <= eps < math.inf:  # NaN fails too
        return False
    shape = x.shape
    if not shape:
        return False
    n = shape[-1]
    for t in (weight, bias, input_bias):
        if t is not None and (type(t) not in PLAIN_TENSORS or t.dtype not in FLOAT_DTYPES or t.shape != (n,)):
            return False
    if residual is not None and (type(residual) not in PLAIN_TENSORS or residual.dtype not in FLOAT_DTYPES
                                 or residual.shape != shape):
        return False
    return kernel_devices_ok(x, weight, bias, input_bias, residual)


def _norm(name, x, residual, weight, bias, input_bias, eps, is_rms):
    if torch.compiler.is_compiling() or not _valid(x, residual, weight, bias, input_bias, eps):
        eps = _check(name, x, residual, weight, bias, input_bias, eps)
    n = x.shape[-1]
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None
    input_bias = input_bias.contiguous() if input_bias is not None else None
    res = as_rows(residual, n) if residual is not None else None
    y, h, _, _ = norm_fwd(as_rows(x, n), weight, bias, input_bias, res, eps, is_rms)
    return from_rows(y, x.shape), (from_rows(h, x.shape) if residual is not None else None)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5, *, input_bias: torch.Tensor | None = None) -> torch.Tensor:
    """LayerNorm(x + input_bias) * weight + bias over the last dim (F.layer_norm over [x.shape[-1]])."""
    return _norm("layer_norm", x, None, weight, bias, input_bias, eps, is_rms=False)[0]


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = 1e-6, *,
             input_bias: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm(x + input_bias) * weight over the last dim; eps=None uses the machine epsilon of the compute
    type (fp32, also for 16-bit x), as torch does."""
    return _norm("rms_norm", x, None, weight, None, input_bias, eps, is_rms=True)[0]


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, eps: float = 1e-5, *,
                   input_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, h): h = x + input_bias + residual in x's dtype (the new residual stream), y = layer_norm(h)."""
    check_tensor("add_layer_norm", "residual", residual)
    return _norm("add_layer_norm", x, residual, weight, bias, input_bias, eps, is_rms=False)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None = None,
                 eps: float | None = 1e-6, *,
                 input_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, h): h = x + input_bias + residual in x's dtype (the new residual stream), y = rms_norm(h)."""
    check_tensor("add_rms_norm", "residual", residual)
    return _norm("add_rms_norm", x, residual, weight, None, input_bias, eps, is_rms=True)
