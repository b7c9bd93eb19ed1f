"""Backward of the fused GEMM epilogue: dpre = dY * keep/(1-p) * act'(pre), plus dbias partial sums.

Two producers of dpre, both writing per-row-tile fp32 column sums of dpre into a [tiles_m, N] buffer
(summed once afterwards: dbias is deterministic, no atomics):
- `dact_kernel`: one fused elementwise pass over the saved pre-activation (the default, recompute=False);
- `gemm_dact_kernel`: recomputes pre = a @ b + bias with the portable GEMM main loop and emits dpre in
  its epilogue (recompute=True: the pre-activation is never stored).
The dropout mask is regenerated from the seed with the same global (row, column) offsets as the forward.
"""
import triton
import triton.language as tl

from .activations import activation_grad, dropout_keep
from .gemm import program_tile


@triton.jit
def _dpre_tile(pre, rows, cols, M, N, dy_ptr, stride_dym, stride_dyn, dpre_ptr, stride_dpm, part_ptr,
               part_row, seed_ptr, p,
               ACT: tl.constexpr, DROPOUT: tl.constexpr, DBIAS: tl.constexpr):
    col_ok = cols < N
    mask = (rows[:, None] < M) & col_ok[None, :]
    rows64 = rows.to(tl.int64)
    dy = tl.load(dy_ptr + rows64[:, None] * stride_dym + cols[None, :].to(tl.int64) * stride_dyn,
                 mask=mask, other=0.0).to(tl.float32)
    g = dy * activation_grad(pre, ACT)
    if DROPOUT:
        keep = dropout_keep(seed_ptr, rows64, cols, p)
        g = g * tl.where(keep, 1.0 / (1.0 - tl.full((), p, tl.float32)), 0.0)  # nan stays nan, as in torch
    g = tl.where(mask, g, 0.0)
    tl.store(dpre_ptr + rows64[:, None] * stride_dpm + cols[None, :], g.to(dpre_ptr.dtype.element_ty),
             mask=mask)
    if DBIAS:
        tl.store(part_ptr + part_row.to(tl.int64) * N + cols, tl.sum(g, axis=0), mask=col_ok)


@triton.jit
def dact_kernel(
    dy_ptr, pre_ptr, dpre_ptr, part_ptr, seed_ptr,
    M, N, stride_dym, stride_dyn, stride_pm, stride_dpm, p,
    ACT: tl.constexpr, DROPOUT: tl.constexpr, DBIAS: tl.constexpr, HAS_PRE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)); part row = program_id(0). HAS_PRE=False: act is none."""
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    if HAS_PRE:
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        pre = tl.load(pre_ptr + rows.to(tl.int64)[:, None] * stride_pm + cols[None, :], mask=mask,
                      other=0.0).to(tl.float32)
    else:
        pre = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    _dpre_tile(pre, rows, cols, M, N, dy_ptr, stride_dym, stride_dyn, dpre_ptr, stride_dpm, part_ptr,
               pid_m, seed_ptr, p, ACT, DROPOUT, DBIAS)


@triton.jit
def gemm_dact_kernel(
    a_ptr, b_ptr, bias_ptr, dy_ptr, dpre_ptr, part_ptr, seed_ptr,
    M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_dym, stride_dyn, stride_dpm, p,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, DROPOUT: tl.constexpr, DBIAS: tl.constexpr,
    PRECISION: tl.constexpr, ROUND_PRE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Recompute pre = a @ b + bias tile by tile; the epilogue reads dY and writes dpre (and partials)."""
    acc, rows, cols, pid_m = program_tile(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                                          PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    # Round pre as the saved-pre path stores it (the wider of the operands' and dy's dtypes), so both paths
    # give the same dpre.
    pre = acc.to(a_ptr.dtype.element_ty).to(tl.float32) if ROUND_PRE else acc
    _dpre_tile(pre, rows, cols, M, N, dy_ptr, stride_dym, stride_dyn, dpre_ptr, stride_dpm, part_ptr,
               pid_m, seed_ptr, p, ACT, DROPOUT, DBIAS)
