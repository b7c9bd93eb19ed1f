"""trifuse::norm_fwd / trifuse::norm_bwd (LayerNorm and RMSNorm, fused adds) with autograd.

One op pair serves layer_norm, rms_norm, add_layer_norm and add_rms_norm. Outputs have a fixed
arity: absent ones (h without a residual, mean for RMSNorm, gradients of absent parameters) are
empty (0,) tensors, which the autograd glue maps to None. The eager path's direct implementations
return None for them instead (no allocation).
"""
from __future__ import annotations

import torch

from ..ops.norm import norm_bwd_into, norm_fwd_into
from .eager import register


def _or_empty(t: torch.Tensor | None, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return t if t is not None else like.new_empty(0, dtype=dtype or like.dtype)


def _norm_fwd_direct(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    input_bias: torch.Tensor | None, residual: torch.Tensor | None, eps: float, is_rms: bool,
    stats: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(y, h, mean, rstd) for x (M, N): h = x + input_bias + residual (None without a residual),
    mean None for RMSNorm; without stats (inference) mean and rstd are None and never written."""
    M, N = x.shape
    y = x.new_empty(M, N)  # contiguous; sizes as separate ints (a size tuple parses slower)
    h = x.new_empty(M, N) if residual is not None else None
    mean = None if is_rms or not stats else x.new_empty(M, dtype=torch.float32)
    rstd = x.new_empty(M, dtype=torch.float32) if stats else None
    norm_fwd_into(x, weight, bias, input_bias, residual, eps, is_rms, y, h, mean, rstd)
    return y, h, mean, rstd


def _norm_fwd_inference(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    input_bias: torch.Tensor | None, residual: torch.Tensor | None, eps: float, is_rms: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, None, None]:
    """_norm_fwd_direct without the statistics: no backward will read them."""
    return _norm_fwd_direct(x, weight, bias, input_bias, residual, eps, is_rms, False)


def _norm_fwd(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    input_bias: torch.Tensor | None, residual: torch.Tensor | None, eps: float, is_rms: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The registered op: _norm_fwd_direct with (0,) tensors for its Nones."""
    y, h, mean, rstd = _norm_fwd_direct(x, weight, bias, input_bias, residual, eps, is_rms)
    return y, _or_empty(h, x), _or_empty(mean, x, torch.float32), rstd


def _norm_bwd_direct(
    dy: torch.Tensor, dh_out: torch.Tensor | None, src: torch.Tensor,
    input_bias: torch.Tensor | None, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, rstd: torch.Tensor, is_rms: bool, recompute_h: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dx, dweight, dbias, dinput_bias), None for an absent parameter's gradient; src is h, or x
    when recompute_h (h = x + input_bias). mean is not read for RMSNorm (any tensor stands in).

    bias is read for its dtype only (dbias = colsum(dy) does not depend on it).
    """
    M, N = src.shape
    dx = src.new_empty(M, N)
    dw = weight.new_empty(N) if weight is not None else None
    db = bias.new_empty(N) if bias is not None else None
    dib = input_bias.new_empty(N) if input_bias is not None else None
    norm_bwd_into(dy, dh_out, src, input_bias if recompute_h else None, weight,
                  None if is_rms else mean, rstd, is_rms, dx, dw, db, dib)
    return dx, dw, db, dib


def _norm_bwd(
    dy: torch.Tensor, dh_out: torch.Tensor | None, src: torch.Tensor,
    input_bias: torch.Tensor | None, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, rstd: torch.Tensor, is_rms: bool, recompute_h: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The registered op: _norm_bwd_direct with (0,) tensors for its Nones."""
    dx, dw, db, dib = _norm_bwd_direct(dy, dh_out, src, input_bias, weight, bias, mean, rstd, is_rms,
                                       recompute_h)
    return dx, _or_empty(dw, dx), _or_empty(db, dx), _or_empty(dib, dx)


norm_bwd = register("trifuse::norm_bwd", _norm_bwd, direct=_norm_bwd_direct)


def _setup_context(ctx, inputs, output):
    x, weight, bias, input_bias, residual, _eps, is_rms = inputs
    _y, h, mean, rstd = output
    ctx.is_rms = is_rms
    ctx.has_res = residual is not None
    ctx.res_dtype = residual.dtype if residual is not None else None
    # Without a residual, h = x + input_bias is recomputed in the backward instead of being stored.
    ctx.recompute_h = residual is None and input_bias is not None
    if ctx.has_res and not any(t is not None and t.requires_grad for t in (x, input_bias, residual)):
        # h = x + input_bias + residual needs no graph when only the weights do (torch's own sum has none).
        ctx.mark_non_differentiable(h)
    ctx.save_for_backward(h if ctx.has_res else x, input_bias, weight, bias, None if is_rms else mean, rstd)


def _backward(ctx, dy, dh, _dmean, _drstd):
    src, input_bias, weight, bias, mean, rstd = ctx.saved_tensors
    if dy is None:  # only h was used downstream
        dy = torch.zeros(src.shape, dtype=src.dtype, device=src.device)
    # RMSNorm saves no mean and its backward reads none: rstd stands in for the op's mean argument.
    dx, dw, db, dib = norm_bwd(dy, dh if ctx.has_res else None, src, input_bias, weight, bias,
                               mean if mean is not None else rstd, rstd, ctx.is_rms, ctx.recompute_h)
    dres = None
    if ctx.has_res:
        # h = x + input_bias + residual: the residual's gradient is dh itself.
        dres = dx if ctx.res_dtype == dx.dtype else dx.to(ctx.res_dtype)
    return (dx, dw if weight is not None else None, db if bias is not None else None,
            dib if input_bias is not None else None, dres, None, None)


norm_fwd = register("trifuse::norm_fwd", _norm_fwd, setup_context=_setup_context, backward=_backward,
                    direct=_norm_fwd_direct, inference=_norm_fwd_inference)
