"""trifuse::softmax_fwd / trifuse::softmax_bwd with autograd."""
from __future__ import annotations

import torch

from ..ops.softmax import softmax_bwd_into, softmax_fwd_into
from .eager import register


def _fwd(x: torch.Tensor, log: bool) -> torch.Tensor:
    M, N = x.shape
    out = x.new_empty(M, N)  # contiguous; cheaper than empty_like(memory_format=...)
    softmax_fwd_into(x, out, log)
    return out


def _bwd(y: torch.Tensor, dy: torch.Tensor, log: bool) -> torch.Tensor:
    M, N = y.shape
    dx = y.new_empty(M, N)
    softmax_bwd_into(y, dy, dx, log)
    return dx


def _setup_context(ctx, inputs, output):
    ctx.log = inputs[1]
    ctx.save_for_backward(output)


def _backward(ctx, dy):
    (y,) = ctx.saved_tensors
    return softmax_bwd(y, dy, ctx.log), None


softmax_bwd = register("trifuse::softmax_bwd", _bwd)
# Softmax over the rows of a 2-D tensor (the functional layer flattens everything else).
softmax_rows = register("trifuse::softmax_fwd", _fwd, setup_context=_setup_context, backward=_backward)
