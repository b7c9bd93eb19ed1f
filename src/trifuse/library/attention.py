"""trifuse::attention_fwd / trifuse::attention_bwd with autograd (fixed-rank 4-D tensors)."""
from __future__ import annotations

import torch

from ..ops.attention import attention_bwd_into, attention_fwd_into
from .eager import register


def _attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out (B, Hq, Sq, D) in q's dtype, lse (B, Hq, Sq) fp32, natural log)."""
    B, Hq, Sq, D = q.shape
    out = torch.empty((B, Hq, Sq, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q.device)
    attention_fwd_into(q, k, v, out, lse, causal, scale)
    return out, lse


def _attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                  lse: torch.Tensor, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    attention_bwd_into(do, q, k, v, out, lse, dq, dk, dv, causal, scale)
    return dq, dk, dv


attention_bwd = register("trifuse::attention_bwd", _attention_bwd)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale = inputs
    out, lse = output
    ctx.causal = causal
    ctx.scale = scale
    ctx.save_for_backward(q, k, v, out, lse)
    # The LSE is an auxiliary output for the backward; gradients through it are not supported.
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_bwd(dout, q, k, v, out, lse, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


attention_fwd = register("trifuse::attention_fwd", _attention_fwd, setup_context=_setup_context,
                         backward=_backward)
