"""Hopper (sm_90) GEMM with the same fused epilogue: TMA tensor descriptors, persistent grid.

`min(num_SMs, tiles)` programs each walk tiles `start, start + NUM_SMS, ...` in grouped order. Operands
are read through device-side tensor descriptors (created once, before the loops: creating them inside a
pipelined loop crashes the 3.6 pipeliner), the K loop is software-pipelined (num_stages at launch), and
the output is written by a descriptor store, optionally in two column halves (EPI_SUBTILE) so the
epilogue holds half the tile in registers. A_T / B_T say an operand is stored transposed (unit stride
along M or N): the descriptor then reads the stored layout and the tile is transposed in registers, so
x @ w.T needs no copy.
"""
import triton
import triton.language as tl

from .gemm import fwd_epilogue, grouped_tile


@triton.jit
def _load_a(a_desc, om, ok, A_T: tl.constexpr):
    if A_T:
        return a_desc.load([ok, om]).T
    return a_desc.load([om, ok])


@triton.jit
def _load_b(b_desc, ok, on, B_T: tl.constexpr):
    if B_T:
        return b_desc.load([on, ok]).T
    return b_desc.load([ok, on])


@triton.jit
def gemm_tma_kernel(
    a_ptr, b_ptr, out_ptr, bias_ptr, res_ptr, pre_ptr, seed_ptr,
    M, N, K, stride_a, stride_b, stride_om, stride_rm, stride_rn, stride_pm, p,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, DROPOUT: tl.constexpr,
    STORE_PRE: tl.constexpr, PRECISION: tl.constexpr, A_T: tl.constexpr, B_T: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr, EPI_SUBTILE: tl.constexpr, FLATTEN: tl.constexpr,
):
    """stride_a / stride_b: the leading stride of the stored layout (the other stride is 1)."""
    if A_T:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[K, M], strides=[stride_a, 1],
                                           block_shape=[BLOCK_K, BLOCK_M])
    else:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[stride_a, 1],
                                           block_shape=[BLOCK_M, BLOCK_K])
    if B_T:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[stride_b, 1],
                                           block_shape=[BLOCK_N, BLOCK_K])
    else:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[stride_b, 1],
                                           block_shape=[BLOCK_K, BLOCK_N])
    if EPI_SUBTILE:
        out_desc = tl.make_tensor_descriptor(out_ptr, shape=[M, N], strides=[stride_om, 1],
                                             block_shape=[BLOCK_M, BLOCK_N // 2])
    else:
        out_desc = tl.make_tensor_descriptor(out_ptr, shape=[M, N], strides=[stride_om, 1],
                                             block_shape=[BLOCK_M, BLOCK_N])
    out_ty = out_ptr.dtype.element_ty
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile_id in tl.range(tl.program_id(0), num_tiles, NUM_SMS, flatten=FLATTEN):
        pid_m, pid_n = grouped_tile(tile_id, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        om = pid_m * BLOCK_M
        on = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            ok = ki * BLOCK_K
            acc = tl.dot(_load_a(a_desc, om, ok, A_T), _load_b(b_desc, ok, on, B_T), acc,
                         input_precision=PRECISION)
        rows = om + tl.arange(0, BLOCK_M)
        if EPI_SUBTILE:
            halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            acc0, acc1 = tl.split(halves)
            cols0 = on + tl.arange(0, BLOCK_N // 2)
            y0 = fwd_epilogue(acc0, rows, cols0, M, N, bias_ptr, res_ptr, stride_rm, stride_rn, pre_ptr,
                              stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT, STORE_PRE)
            out_desc.store([om, on], y0.to(out_ty))
            cols1 = cols0 + BLOCK_N // 2
            y1 = fwd_epilogue(acc1, rows, cols1, M, N, bias_ptr, res_ptr, stride_rm, stride_rn, pre_ptr,
                              stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT, STORE_PRE)
            out_desc.store([om, on + BLOCK_N // 2], y1.to(out_ty))
        else:
            cols = on + tl.arange(0, BLOCK_N)
            y = fwd_epilogue(acc, rows, cols, M, N, bias_ptr, res_ptr, stride_rm, stride_rn, pre_ptr,
                             stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT, STORE_PRE)
            out_desc.store([om, on], y.to(out_ty))
