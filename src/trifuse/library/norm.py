"""trifuse::norm_fwd / trifuse::norm_bwd (LayerNorm and RMSNorm, fused adds) with autograd.

One op pair serves layer_norm, rms_norm, add_layer_norm and add_rms_norm. Outputs have a fixed
arity: absent ones (h without a residual, mean for RMSNorm, gradients of absent parameters) are
empty (0,) tensors, which the autograd glue maps to None.
"""
from __future__ import annotations

import torch

from ..ops.norm import norm_bwd_into, norm_fwd_into
from .eager import register


def _empty(like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return like.new_empty((0,), dtype=dtype or like.dtype)


def _norm_fwd(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    input_bias: torch.Tensor | None, residual: torch.Tensor | None, eps: float, is_rms: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, h, mean, rstd) for x (M, N): h = x + input_bias + residual (only with a residual)."""
    M = x.shape[0]
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    h = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else _empty(x)
    mean = _empty(x, torch.float32) if is_rms else x.new_empty((M,), dtype=torch.float32)
    rstd = x.new_empty((M,), dtype=torch.float32)
    norm_fwd_into(x, weight, bias, input_bias, residual, eps, is_rms, y,
                  h if residual is not None else None, None if is_rms else mean, rstd)
    return y, h, mean, rstd


def _norm_bwd(
    dy: torch.Tensor, dh_out: torch.Tensor | None, src: torch.Tensor,
    input_bias: torch.Tensor | None, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, rstd: torch.Tensor, is_rms: bool, recompute_h: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias, dinput_bias); src is h, or x when recompute_h (h = x + input_bias).

    bias is read for its dtype only (dbias = colsum(dy) does not depend on it).
    """
    dx = torch.empty_like(src, memory_format=torch.contiguous_format)

    def grad_for(t):
        return torch.empty_like(t) if t is not None else None

    dw, db, dib = grad_for(weight), grad_for(bias), grad_for(input_bias)
    norm_bwd_into(dy, dh_out, src, input_bias if recompute_h else None, weight,
                  None if is_rms else mean, rstd, is_rms, dx, dw, db, dib)
    return tuple(g if g is not None else _empty(dx) for g in (dx, dw, db, dib))


norm_bwd = register("trifuse::norm_bwd", _norm_bwd)


def _setup_context(ctx, inputs, output):
    x, weight, bias, input_bias, residual, _eps, is_rms = inputs
    _y, h, mean, rstd = output
    ctx.is_rms = is_rms
    ctx.has_res = residual is not None
    ctx.res_dtype = residual.dtype if residual is not None else None
    # Without a residual, h = x + input_bias is recomputed in the backward instead of being stored.
    ctx.recompute_h = residual is None and input_bias is not None
    ctx.save_for_backward(h if ctx.has_res else x, input_bias, weight, bias, mean, rstd)


def _backward(ctx, dy, dh, _dmean, _drstd):
    src, input_bias, weight, bias, mean, rstd = ctx.saved_tensors
    if dy is None:  # only h was used downstream
        dy = torch.zeros(src.shape, dtype=src.dtype, device=src.device)
    dx, dw, db, dib = norm_bwd(dy, dh if ctx.has_res else None, src, input_bias, weight, bias, mean,
                               rstd, ctx.is_rms, ctx.recompute_h)
    dres = None
    if ctx.has_res:
        # h = x + input_bias + residual: the residual's gradient is dh itself.
        dres = dx if ctx.res_dtype == dx.dtype else dx.to(ctx.res_dtype)
    return (dx, dw if weight is not None else None, db if bias is not None else None,
            dib if input_bias is not None else None, dres, None, None)


norm_fwd = register("trifuse::norm_fwd", _norm_fwd, setup_context=_setup_context, backward=_backward)
