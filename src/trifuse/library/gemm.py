"""trifuse::gemm_fwd and its backward ops (trifuse::gemm_dact, trifuse::gemm_dact_recompute), with
autograd. 2-D tensors only; the functional layer flattens batch dims and validates.

Backward of out = dropout(act(a @ b + bias)) + residual:
    dpre = dout * keep/(1-p) * act'(pre)   (gemm_dact: elementwise over the saved pre-activation, or
                                            gemm_dact_recompute: in the epilogue of a GEMM recomputing pre)
    da = dpre @ b.T,  db = a.T @ dpre,  dbias = column sums of dpre (deterministic),  dresidual = dout.
"""
from __future__ import annotations

import torch

from ..ops.gemm import dact_into, gemm_dact_into, gemm_into
from .eager import register


def _gemm_fwd(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
             seed: torch.Tensor | None, activation: str, dropout_p: float, out_dtype: torch.dtype | None,
             save_pre: bool, tf32: bool, recompute: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out, pre): pre = a @ b + bias when save_pre, else an empty tensor, in the wider of a's and
    out's dtypes (fp16 operands with an fp32 out: a pre past fp16's range stays finite, as out does, and so
    does its gradient). `recompute` only tells the backward how to get pre back."""
    M, N = a.shape[0], b.shape[1]
    # Sizes as separate arguments: torch.empty((M, N), ...) parses ~2 us slower a call.
    out = torch.empty(M, N, dtype=out_dtype if out_dtype is not None else a.dtype, device=a.device)
    pre = torch.empty(*((M, N) if save_pre else (0,)), dtype=torch.promote_types(a.dtype, out.dtype),
                      device=a.device)
    gemm_into(a, b, out, bias=bias, residual=residual, pre=pre if save_pre else None, seed=seed,
              activation=activation, dropout_p=dropout_p, tf32=tf32)
    return out, pre


def _gemm_dact(dy: torch.Tensor, pre: torch.Tensor | None, seed: torch.Tensor | None, activation: str,
              dropout_p: float, dtype: torch.dtype, bias_dtype: torch.dtype | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dpre in `dtype`, dbias in bias_dtype or an empty tensor when bias_dtype is None)."""
    M, N = dy.shape
    dpre = torch.empty(M, N, dtype=dtype, device=dy.device)
    dbias = torch.empty(N if bias_dtype is not None else 0, dtype=bias_dtype or dtype, device=dy.device)
    dact_into(dy, pre, dpre, dbias if bias_dtype is not None else None, seed, activation, dropout_p)
    return dpre, dbias


def _gemm_dact_recompute(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, dy: torch.Tensor,
                        seed: torch.Tensor | None, activation: str, dropout_p: float, tf32: bool
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    M, N = a.shape[0], b.shape[1]
    dpre = torch.empty(M, N, dtype=a.dtype, device=a.device)
    dbias = torch.empty(N if bias is not None else 0, dtype=a.dtype if bias is None else bias.dtype,
                        device=a.device)
    gemm_dact_into(a, b, bias, dy, dpre, dbias if bias is not None else None, seed, activation, dropout_p,
                   tf32)
    return dpre, dbias


gemm_dact = register("trifuse::gemm_dact", _gemm_dact)
gemm_dact_recompute = register("trifuse::gemm_dact_recompute", _gemm_dact_recompute)


def _matmul(a: torch.Tensor, b: torch.Tensor, tf32: bool) -> torch.Tensor:
    """The backward's plain GEMMs (no epilogue left to fuse). 16-bit: cuBLAS, which ran them faster than
    the Triton kernel on the H200 (8192x4096x14336 bias+SiLU backward: 2.76 ms, cuBLAS's two GEMMs alone
    2.39). fp32: trifuse's kernel, so the op's exact-vs-tf32 choice holds whatever torch's global flag says."""
    if a.dtype in (torch.float16, torch.bfloat16):
        return torch.mm(a, b)
    return gemm_fwd(a, b, None, None, None, "none", 0.0, None, False, tf32, False)[0]


def _setup_context(ctx, inputs, output):
    a, b, bias, residual, seed, activation, dropout_p, _out_dtype, save_pre, tf32, recompute = inputs
    ctx.activation, ctx.dropout_p, ctx.tf32, ctx.recompute = activation, dropout_p, tf32, recompute
    ctx.has_bias = bias is not None
    ctx.res_dtype = residual.dtype if residual is not None else None
    pre = output[1] if save_pre else None
    ctx.save_for_backward(a, b, bias, pre, seed)


def _backward(ctx, dout, _dpre_out):
    a, b, bias, pre, seed = ctx.saved_tensors
    need_a, need_b, need_bias, need_res = ctx.needs_input_grad[:4]
    act, p = ctx.activation, ctx.dropout_p
    bias_dtype = bias.dtype if bias is not None else None
    if act == "none" and p == 0.0:
        dpre = dout if dout.dtype == a.dtype else dout.to(a.dtype)
        dbias = dout.float().sum(0).to(bias_dtype) if bias is not None else None
    elif ctx.recompute or (pre is None and act != "none"):
        dpre, dbias = gemm_dact_recompute(a, b, bias, dout, seed, act, p, ctx.tf32)
    else:
        dpre, dbias = gemm_dact(dout, pre, seed, act, p, a.dtype, bias_dtype)
    da = _matmul(dpre, b.t(), ctx.tf32) if need_a else None
    db = None
    if need_b:
        if b.stride(0) == 1 and b.stride(1) != 1:
            # b is a transposed (N, K) weight: compute its gradient in that layout, so weight.grad is
            # contiguous like nn.Linear's.
            db = _matmul(dpre.t(), a, ctx.tf32).t()
        else:
            db = _matmul(a.t(), dpre, ctx.tf32)
    dres = (dout if dout.dtype == ctx.res_dtype else dout.to(ctx.res_dtype)) if need_res else None
    return da, db, dbias if need_bias else None, dres, None, None, None, None, None, None, None


gemm_fwd = register("trifuse::gemm_fwd", _gemm_fwd, setup_context=_setup_context, backward=_backward)
