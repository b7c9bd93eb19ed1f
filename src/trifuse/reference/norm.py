"""Norm oracles: the eager compositions (x + input_bias + residual, then F.layer_norm / F.rms_norm)."""
from __future__ import annotations

import torch.nn.functional as F


def _cast(t, dtype):
    return t.to(dtype) if t is not None and dtype is not None else t


def _sum_inputs(x, input_bias, residual):
    h = x if input_bias is None else x + input_bias.to(x.dtype)
    return h if residual is None else h + residual.to(x.dtype)


def layer_norm_ref(x, weight=None, bias=None, eps=1e-5, *, input_bias=None, residual=None, dtype=None):
    """F.layer_norm(x + input_bias + residual) in `dtype` (None: x's own dtype, eager PyTorch's answer)."""
    x, weight, bias, input_bias, residual = (_cast(t, dtype) for t in (x, weight, bias, input_bias, residual))
    h = _sum_inputs(x, input_bias, residual)
    wb = [t.to(h.dtype) if t is not None else None for t in (weight, bias)]
    y = F.layer_norm(h, (h.shape[-1],), *wb, eps)
    return y if residual is None else (y, h)


def rms_norm_ref(x, weight=None, eps=1e-6, *, input_bias=None, residual=None, dtype=None):
    """F.rms_norm(x + input_bias + residual) in `dtype` (None: x's own dtype)."""
    x, weight, input_bias, residual = (_cast(t, dtype) for t in (x, weight, input_bias, residual))
    h = _sum_inputs(x, input_bias, residual)
    y = F.rms_norm(h, (h.shape[-1],), weight.to(h.dtype) if weight is not None else None, eps)
    return y if residual is None else (y, h)
