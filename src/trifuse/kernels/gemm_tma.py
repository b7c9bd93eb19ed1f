"""Hopper (sm_90) GEMM with the same fused epilogue: TMA tensor descriptors, persistent grid.

`min(num_SMs, tiles)` programs each walk tiles `start, start + NUM_SMS, ...` in grouped order. Operands
are read through device-side tensor descriptors (created once, before the loops: creating them inside a
pipelined loop crashes the 3.6 pipeliner), the K loop is software-pipelined (num_stages at launch), and
the output is written by descriptor stores, one per column slice of the tile (EPI_SPLIT: 2 with the
config's epi_subtile; 32-column slices with dropout, a stored pre-activation or a residual, see
ops.gemm.epi_split), so the epilogue holds less in registers at once. A_T / B_T say an operand is stored
transposed (unit stride along M or N): the descriptor then reads the stored layout and the tile is
transposed in registers, so x @ w.T needs no copy.
"""
import triton
import triton.language as tl

from .gemm import fwd_epilogue, grouped_tile


# One return after a constexpr if/else: the compiler visits only the taken branch of a constexpr `if`, but
# an early `return` inside it leaves the code after it live, so two returns of different shapes (the
# stored tile and its transpose) fail to compile ("Inconsistent return types").
@triton.jit
def _load_tile(desc, r, c, TRANSPOSED: tl.constexpr):
    """The operand's tile at logical (r, c); an operand stored transposed is read at (c, r) and flipped."""
    if TRANSPOSED:
        t = desc.load([c, r]).T
    else:
        t = desc.load([r, c])
    return t


@triton.jit
def _halves(x, BLOCK_M: tl.constexpr, WIDTH: tl.constexpr):
    """The left and right column halves of a [BLOCK_M, WIDTH] register tile."""
    return tl.split(tl.permute(tl.reshape(x, (BLOCK_M, 2, WIDTH // 2)), (0, 2, 1)))


@triton.jit
def _epilogue_store(acc, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                    stride_rn, pre_ptr, stride_pm, seed_ptr, p,
                    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, DROPOUT: tl.constexpr,
                    STORE_PRE: tl.constexpr):
    """The epilogue on one column slice of a tile (global rows and cols, its corner at (om, on)), stored
    through out_desc."""
    y = fwd_epilogue(acc, rows, cols, M, N, bias_ptr, res_ptr, stride_rm, stride_rn, pre_ptr, stride_pm,
                     seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT, STORE_PRE)
    out_desc.store([om, on], y.to(out_ptr.dtype.element_ty))


@triton.jit
def _epilogue_pair(acc, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm, stride_rn,
                   pre_ptr, stride_pm, seed_ptr, p,
                   ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, DROPOUT: tl.constexpr,
                   STORE_PRE: tl.constexpr, BLOCK_M: tl.constexpr, SUB_N: tl.constexpr):
    """The epilogue on acc ([BLOCK_M, 2 * SUB_N]) as two SUB_N-wide slices, left then right."""
    acc0, acc1 = _halves(acc, BLOCK_M, 2 * SUB_N)
    _epilogue_store(acc0, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                    stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT, STORE_PRE)
    _epilogue_store(acc1, rows, cols + SUB_N, out_desc, out_ptr, om, on + SUB_N, M, N, bias_ptr, res_ptr,
                    stride_rm, stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT,
                    STORE_PRE)


@triton.jit
def _epilogue_slices(acc, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                     stride_rn, pre_ptr, stride_pm, seed_ptr, p,
                     ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, DROPOUT: tl.constexpr,
                     STORE_PRE: tl.constexpr,
                     BLOCK_M: tl.constexpr, SUB_N: tl.constexpr, SLICES: tl.constexpr):
    """The epilogue on acc ([BLOCK_M, SLICES * SUB_N], SLICES 1, 2 or 4), one SUB_N-wide slice after the
    other; cols and on locate the first slice."""
    if SLICES == 1:
        _epilogue_store(acc, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                        stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT,
                        STORE_PRE)
    elif SLICES == 2:
        _epilogue_pair(acc, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                       stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT,
                       STORE_PRE, BLOCK_M, SUB_N)
    else:
        tl.static_assert(SLICES == 4, "1, 2 or 4 slices")
        left, right = _halves(acc, BLOCK_M, 4 * SUB_N)
        _epilogue_pair(left, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                       stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT,
                       STORE_PRE, BLOCK_M, SUB_N)
        _epilogue_pair(right, rows, cols + 2 * SUB_N, out_desc, out_ptr, om, on + 2 * SUB_N, M, N, bias_ptr,
                       res_ptr, stride_rm, stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES,
                       DROPOUT, STORE_PRE, BLOCK_M, SUB_N)


@triton.jit
def gemm_tma_kernel(
    a_ptr, b_ptr, out_ptr, bias_ptr, res_ptr, pre_ptr, seed_ptr,
    M, N, K, stride_a, stride_b, stride_om, stride_rm, stride_rn, stride_pm, p,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, DROPOUT: tl.constexpr,
    STORE_PRE: tl.constexpr, PRECISION: tl.constexpr, A_T: tl.constexpr, B_T: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr, EPI_SPLIT: tl.constexpr, FLATTEN: tl.constexpr,
):
    """stride_a / stride_b: the leading stride of the stored layout (the other stride is 1).

    EPI_SPLIT (1, 2, 4 or 8): the epilogue runs on that many column slices of the tile, one after another,
    so it holds less in registers at once. Dropout wants narrow slices: Philox works on every element of a
    slice at once (four live 32-bit words each), and a 128x256 tile in halves spilled to local memory."""
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
    SUB_N: tl.constexpr = BLOCK_N // EPI_SPLIT
    out_desc = tl.make_tensor_descriptor(out_ptr, shape=[M, N], strides=[stride_om, 1],
                                         block_shape=[BLOCK_M, SUB_N])
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile_id in tl.range(tl.program_id(0), num_tiles, NUM_SMS, flatten=FLATTEN):
        pid_m, pid_n = grouped_tile(tile_id, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        om = pid_m * BLOCK_M
        on = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            ok = ki * BLOCK_K
            acc = tl.dot(_load_tile(a_desc, om, ok, A_T), _load_tile(b_desc, ok, on, B_T), acc,
                         input_precision=PRECISION)
        # rows and the first slice's cols here, the other slices' as cols + k * SUB_N: computing each
        # slice's columns afresh (on + k * SUB_N + arange) took the sm_90 build from 173 registers to a spill.
        rows = om + tl.arange(0, BLOCK_M)
        cols = on + tl.arange(0, SUB_N)
        if EPI_SPLIT <= 4:
            _epilogue_slices(acc, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                             stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT,
                             STORE_PRE, BLOCK_M, SUB_N, EPI_SPLIT)
        else:
            tl.static_assert(EPI_SPLIT == 8, "EPI_SPLIT must be 1, 2, 4 or 8")
            left, right = _halves(acc, BLOCK_M, BLOCK_N)
            _epilogue_slices(left, rows, cols, out_desc, out_ptr, om, on, M, N, bias_ptr, res_ptr, stride_rm,
                             stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT, HAS_BIAS, HAS_RES, DROPOUT,
                             STORE_PRE, BLOCK_M, SUB_N, 4)
            _epilogue_slices(right, rows, cols + 4 * SUB_N, out_desc, out_ptr, om, on + 4 * SUB_N, M, N,
                             bias_ptr, res_ptr, stride_rm, stride_rn, pre_ptr, stride_pm, seed_ptr, p, ACT,
                             HAS_BIAS, HAS_RES, DROPOUT, STORE_PRE, BLOCK_M, SUB_N, 4)
