"""trifuse::softmax_fwd / trifuse::softmax_bwd with autograd."""
from __future__ import annotations

import torch
from torch.library import triton_op

from ..ops.softmax import softmax_bwd_into, softmax_fwd_into


@triton_op("trifuse::softmax_fwd", mutates_args={})
def softmax_fwd(x: torch.Tensor, log: bool) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    softmax_fwd_into(x, out, log)
    return out


@triton_op("trifuse::softmax_bwd", mutates_args={})
def softmax_bwd(y: torch.Tensor, dy: torch.Tensor, log: bool) -> torch.Tensor:
    dx = torch.empty(y.shape, dtype=y.dtype, device=y.device)
    softmax_bwd_into(y, dy, dx, log)
    return dx


def _setup_context(ctx, inputs, output):
    _, log = inputs
    ctx.log = log
    ctx.save_for_backward(output)


def _backward(ctx, dy):
    (y,) = ctx.saved_tensors
    return softmax_bwd(y, dy, ctx.log), None


softmax_fwd.register_autograd(_backward, setup_context=_setup_context)
