"""trifuse::attention_fwd / trifuse::attention_bwd with autograd (fixed-rank 4-D tensors)."""
from __future__ import annotations

import torch

from ..ops.attention import attention_bwd_into, attention_fwd_into
from .eager import register


def _attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out (B, Hq, Sq, D) in q's dtype, lse (B, Hq, Sq) fp32, natural log)."""
    B, Hq, Sq, D = q.shape
    # new_empty with sizes as separate ints: a size tuple and a device object cost ~2 us a call more.
    out = q.new_empty(B, Hq, Sq, D)
    lse = q.new_empty(B, Hq, Sq, dtype=torch.float32)
    attention_fwd_into(q, k, v, out, lse, causal, scale)
    return out, lse


def _attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                  lse: torch.Tensor, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq = q.new_empty(*q.shape)  # contiguous, whatever q's strides
    dk = k.new_empty(*k.shape)
    dv = v.new_empty(*v.shape)
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
