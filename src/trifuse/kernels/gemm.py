"""Portable GEMM with a fused epilogue: out = dropout(act(a @ b + bias)) + residual.

Pointer loads with masks, any strides for a and b, grouped tile order for L2 reuse; runs on any sm_80+
GPU (and AMD) and in Triton's interpreter. The pieces (tile order, main loop, epilogue) are separate
jit functions so the Hopper kernel (`gemm_tma.py`) and the backward (`gemm_bwd.py`) reuse them.
"""
import triton
import triton.language as tl

from .activations import activation, dropout_keep


@triton.jit
def grouped_tile(tile_id, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of a tile: GROUP_M row-tiles walk the columns together, so B tiles stay in L2."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_pid_n
    group = tile_id // width
    first_m = group * GROUP_M
    size_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile_id % width) % size_m
    pid_n = (tile_id % width) // size_m
    return pid_m, pid_n


@triton.jit
def mainloop(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
             PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 accumulator of the (pid_m, pid_n) tile of a @ b; K = 0 gives zeros."""
    # Rows and columns past the edge wrap around (they are masked at the store), so only K needs a mask.
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm.to(tl.int64)[:, None] * stride_am + rk[None, :].to(tl.int64) * stride_ak
    b_ptrs = b_ptr + rk[:, None].to(tl.int64) * stride_bk + rn.to(tl.int64)[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=rk[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


@triton.jit
def program_tile(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's output tile of a @ b, in grouped order: (fp32 accumulator, its global rows and
    columns, its row-tile index)."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = mainloop(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
                   PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return acc, rows, cols, pid_m


@triton.jit
def fwd_epilogue(acc, rows, cols, M, N, bias_ptr, res_ptr, stride_rm, stride_rn, pre_ptr, stride_pm,
                 seed_ptr, p,
                 ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, DROPOUT: tl.constexpr,
                 STORE_PRE: tl.constexpr):
    """The epilogue on one fp32 tile at global (rows, cols); returns the fp32 result to store.

    Stores the pre-activation a @ b + bias (for the backward) when STORE_PRE.
    """
    col_ok = cols < N
    mask = (rows[:, None] < M) & col_ok[None, :]
    rows64 = rows.to(tl.int64)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if STORE_PRE:
        tl.store(pre_ptr + rows64[:, None] * stride_pm + cols[None, :], acc.to(pre_ptr.dtype.element_ty),
                 mask=mask)
    y = activation(acc, ACT)
    if DROPOUT:
        keep = dropout_keep(seed_ptr, rows64, cols, p)
        # a multiply, not a select, so a dropped inf or nan stays nan, as torch's y * mask / (1 - p)
        y = y * tl.where(keep, 1.0 / (1.0 - tl.full((), p, tl.float32)), 0.0)
    if HAS_RES:
        y += tl.load(res_ptr + rows64[:, None] * stride_rm + cols[None, :].to(tl.int64) * stride_rn,
                     mask=mask, other=0.0).to(tl.float32)
    return y


@triton.jit
def gemm_fwd_kernel(
    a_ptr, b_ptr, out_ptr, bias_ptr, res_ptr, pre_ptr, seed_ptr,
    M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_om, stride_rm, stride_rn, stride_pm, p,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, DROPOUT: tl.constexpr,
    STORE_PRE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """One program per output tile; out has unit column stride."""
    acc, rows, cols, _ = program_tile(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                                      PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    y = fwd_epilogue(acc, rows, cols, M, N, bias_ptr, res_ptr, stride_rm, stride_rn, pre_ptr, stride_pm,
                     seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT, STORE_PRE)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :],
             y.to(out_ptr.dtype.element_ty), mask=mask)
