"""Hopper (sm_90) GEMM + bias + activation, warp specialized in Gluon ("ping-pong").

Three partitions share a ring of STAGES shared-memory stages: one producer warp issues the TMA loads, and
two consumer warpgroups take alternate output tiles of the persistent tile list (tile `pid + j * NUM_SMS`
goes to warpgroup j % 2). The consumers' main loops take turns (the `turn` barriers), so while one
warpgroup runs its epilogue (bias, activation, store) the other's MMAs keep the tensor cores busy: the
epilogue is off the critical path, which the single-partition Triton kernel (`gemm_tma.py`) cannot do.
Each consumer holds a whole BM x BN fp32 accumulator (128 x 128: 128 registers a thread), so tiles are
smaller than the Triton kernel's 128 x 256 and its main loop is slower on the largest problems;
`ops.gemm_gluon.ws_applies` picks this kernel only where it measured faster.

Epilogues: bias, `activation` (the one definition in kernels/activations.py) and dropout
(`_dropout_in_smem`: the mask of kernels/activations.dropout_keep); a residual or a stored pre-activation
go to the Triton kernel. a (M, K) must be K-contiguous; b is (N, K) K-contiguous (B_T, the x @ w.T case)
or (K, N) N-contiguous. Gluon does not run in Triton's interpreter: this kernel is
tested on the GPU only.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .activations import activation, philox_wide
from .gemm import grouped_tile
from .mbarriers import mbarriers

DROP_ROWS = gl.constexpr(16)  # rows of the output tile the dropout pass holds in registers at a time


@gluon.jit
def keep_rows(tile3, seed, threshold, r0, on):
    """The dropout keep mask of tile3 ([R, G, 8], each thread holding 8 consecutive columns of a row), output
    rows r0.. and columns on.. (on a multiple of 8): kernels/activations.dropout_keep's, bit for bit. One
    Philox call serves a thread's 8 columns."""
    R: gl.constexpr = tile3.shape[0]
    G: gl.constexpr = tile3.shape[1]
    layout3: gl.constexpr = tile3.type.layout
    layout2: gl.constexpr = gl.SliceLayout(2, layout3)
    rows = r0 + gl.arange(0, R, layout=gl.SliceLayout(1, layout2))
    groups = on // 8 + gl.arange(0, G, layout=gl.SliceLayout(0, layout2))
    zero = gl.full([R, G], 0, gl.uint32, layout2)
    c0 = gl.expand_dims(groups.to(gl.uint32), 0) + zero
    c1 = gl.expand_dims(rows.to(gl.uint32), 1) + zero
    w0, w1, w2, w3 = philox_wide(seed, c0, c1)  # tl.philox's words, one wide multiply a product
    k = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(0, layout3)))
    k = gl.expand_dims(gl.expand_dims(k, 0), 0)
    # Draw k: word k // 2, its low half for even k, high for odd.
    word = gl.where(k < 4, gl.where(k < 2, gl.expand_dims(w0, 2), gl.expand_dims(w1, 2)),
                    gl.where(k < 6, gl.expand_dims(w2, 2), gl.expand_dims(w3, 2)))
    draw = gl.where(k % 2 == 0, word & 0xFFFF, word >> 16)
    return draw >= threshold


@gluon.jit
def _dropout_rows(rows_smem, seed, threshold, r0, on):
    """Multiply the dropped elements of rows_smem, a slab of the output tile at global (r0, on), by 0, in
    place."""
    R: gl.constexpr = rows_smem.shape[0]
    BN: gl.constexpr = rows_smem.shape[1]
    G: gl.constexpr = BN // 8
    rows_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // G, G], [gl.num_warps(), 1], [1, 0])
    tile = gl.reshape(rows_smem.load(rows_layout), [R, G, 8])
    keep = keep_rows(tile, seed, threshold, r0, on)
    tile = tile * keep.to(tile.dtype)  # x * 0, not 0: a dropped inf or nan gives nan, as in torch
    rows_smem.store(gl.reshape(tile, [R, BN]))


@gluon.jit
def _dropout_in_smem(c_smem, seed_ptr, p, om, on):
    """Zero the dropped elements of the output tile in c_smem (global (om, on), already scaled by
    1 / (1 - p)): the mask of kernels/activations.dropout_keep bit for bit, so the Triton backward
    recomputes it. Column c takes uint16 draw c % 8 of Philox(seed, counter (c // 8, row, 0, 0)).

    Done from shared memory, after the accumulator's registers are free, DROP_ROWS rows at a time: beside a
    live 128 x 128 fp32 accumulator (or a whole tile's values) the Philox words spilled, and with the ring
    taking nearly all shared memory L1 has little room for spills (H100, 4096^3 bias+SiLU+dropout: 0.336 ms
    computing the mask in the accumulator's layout, 0.205 ms this way, sm_90 build spill 2344 B -> 0)."""
    BM: gl.constexpr = c_smem.shape[0]
    seed = gl.load(seed_ptr)
    threshold = (p * 65536.0 + 0.5).to(gl.uint32)
    for r in gl.static_range(0, BM, DROP_ROWS):
        _dropout_rows(c_smem.slice(r, DROP_ROWS, dim=0), seed, threshold, om + r, on)


@gluon.jit
def load_stage(a_desc, b_desc, a_bufs, b_bufs, ready, empty, it, om, on, kk, STAGES: gl.constexpr,
               B_T: gl.constexpr):
    """k-step `it` of the ring into stage it % STAGES once its consumers have freed it: the a tile at (om, kk)
    and the b tile at (on, kk) (B_T) or (kk, on), completing that stage's ready barrier."""
    s = it % STAGES
    mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
    mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + b_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(a_desc, [om, kk], ready.index(s), a_bufs.index(s))
    if B_T:
        tma.async_copy_global_to_shared(b_desc, [on, kk], ready.index(s), b_bufs.index(s))
    else:
        tma.async_copy_global_to_shared(b_desc, [kk, on], ready.index(s), b_bufs.index(s))


@gluon.jit
def mma_step(a_smem, b_bufs, ready, empty, s, it, acc, use_acc, free_prev, STAGES: gl.constexpr,
             B_T: gl.constexpr):
    """acc += a_smem @ (the b tile of ring k-step `it`, in stage s = it % STAGES), issued once the stage is
    loaded; returns acc with at most this MMA in flight, so the previous k-step's stage is free: its empty
    barrier is arrived on when free_prev."""
    mbarrier.wait(ready.index(s), (it // STAGES) & 1)
    if B_T:
        b = b_bufs.index(s).permute((1, 0))
    else:
        b = b_bufs.index(s)
    acc = warpgroup_mma(a_smem, b, acc, use_acc=use_acc, is_async=True)
    acc = warpgroup_mma_wait(1, deps=(acc, ))
    mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES), count=1, pred=free_prev)
    return acc


@gluon.jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K,
              BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, STAGES: gl.constexpr,
              GROUP_M: gl.constexpr, NUM_SMS: gl.constexpr, B_T: gl.constexpr):
    """One warp: every k-step of every tile of this program, in order, into the ring."""
    num_tiles = gl.cdiv(M, BM) * gl.cdiv(N, BN)
    k_tiles = gl.cdiv(K, BK)
    it = 0
    for tile in range(gl.program_id(0), num_tiles, NUM_SMS):
        pid_m, pid_n = grouped_tile(tile, M, N, BM, BN, GROUP_M)
        om, on = pid_m * BM, pid_n * BN
        for ki in range(k_tiles):
            load_stage(a_desc, b_desc, a_bufs, b_bufs, ready, empty, it, om, on, ki * BK, STAGES, B_T)
            it += 1


@gluon.jit
def _consumer(a_bufs, b_bufs, c_bufs, ready, empty, turn, c_desc, bias_ptr, seed_ptr, p, M, N, K,
              BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, STAGES: gl.constexpr,
              GROUP_M: gl.constexpr, NUM_SMS: gl.constexpr, ACT: gl.constexpr, HAS_BIAS: gl.constexpr,
              DROPOUT: gl.constexpr, B_T: gl.constexpr, WG: gl.constexpr):
    """Warpgroup WG (0 or 1): the main loop and epilogue of every other tile of this program."""
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                     instr_shape=[16, BN, 16])
    num_tiles = gl.cdiv(M, BM) * gl.cdiv(N, BN)
    k_tiles = gl.cdiv(K, BK)
    c_smem = c_bufs.index(WG)
    acc = gl.zeros([BM, BN], gl.float32, layout)
    it = 0  # ring position: counts the other warpgroup's k-steps too
    local = 0
    for tile in range(gl.program_id(0), num_tiles, NUM_SMS):
        if local % 2 == WG:
            pid_m, pid_n = grouped_tile(tile, M, N, BM, BN, GROUP_M)
            om, on = pid_m * BM, pid_n * BN
            # Wait for the other warpgroup's previous main loop to have issued its last MMA. Besides the
            # alternation, this keeps every wait on a ready barrier at most one phase ahead of it (a
            # waiter two phases ahead would read the parity as complete and take an unloaded stage).
            mbarrier.wait(turn.index(WG), ((local // 2) & 1) ^ (1 - WG))
            for ki in range(k_tiles):
                s = it % STAGES
                acc = mma_step(a_bufs.index(s), b_bufs, ready, empty, s, it, acc, ki > 0, ki > 0, STAGES, B_T)
                it += 1
            mbarrier.arrive(turn.index(1 - WG), count=1)
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES), count=1)
            y = acc
            if HAS_BIAS:
                cols = on + gl.arange(0, BN, layout=gl.SliceLayout(0, layout))
                y = y + gl.expand_dims(gl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(gl.float32), 0)
            y = activation(y, ACT)
            if DROPOUT:
                y = y * (1.0 / (1.0 - p))  # kept elements' value; the mask is applied in c_smem below
            tma.store_wait(0)  # this warpgroup's previous tile has left c_smem
            c_smem.store(y.to(c_desc.dtype))
            if DROPOUT:
                _dropout_in_smem(c_smem, seed_ptr, p, om, on)
            fence_async_shared()
            tma.async_copy_shared_to_global(c_desc, [om, on], c_smem)
        else:
            it += k_tiles
        local += 1  # noqa: SIM113 -- no enumerate in jit code
    tma.store_wait(0)


@gluon.jit
def gemm_ws_kernel(a_desc, b_desc, c_desc, bias_ptr, seed_ptr, p, M, N, K,
                   ACT: gl.constexpr, HAS_BIAS: gl.constexpr, DROPOUT: gl.constexpr, B_T: gl.constexpr,
                   STAGES: gl.constexpr, GROUP_M: gl.constexpr, NUM_SMS: gl.constexpr,
                   CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    """a_desc [BM, BK] tiles of a; b_desc [BN, BK] (B_T) or [BK, BN] tiles of b; c_desc [BM, BN] tiles of
    the output. Launch with num_warps=4 (the first consumer) and a grid of min(SMs, tiles) = NUM_SMS."""
    dtype: gl.constexpr = a_desc.dtype
    BM: gl.constexpr = c_desc.block_type.shape[0]
    BN: gl.constexpr = c_desc.block_type.shape[1]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    a_bufs = gl.allocate_shared_memory(dtype, [STAGES] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
    c_bufs = gl.allocate_shared_memory(dtype, [2, BM, BN], c_desc.layout)
    ready = mbarriers(STAGES, 1)
    empty = mbarriers(STAGES, 1)
    turn = mbarriers(2, 1)
    # Argument tuples written out in place: a constexpr kept in a tuple variable arrives as a tensor.
    gl.warp_specialize([
        (_consumer, (a_bufs, b_bufs, c_bufs, ready, empty, turn, c_desc, bias_ptr, seed_ptr, p, M, N, K,
                     BM, BN, BK, STAGES, GROUP_M, NUM_SMS, ACT, HAS_BIAS, DROPOUT, B_T, 0)),
        (_consumer, (a_bufs, b_bufs, c_bufs, ready, empty, turn, c_desc, bias_ptr, seed_ptr, p, M, N, K,
                     BM, BN, BK, STAGES, GROUP_M, NUM_SMS, ACT, HAS_BIAS, DROPOUT, B_T, 1)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, BM, BN, BK, STAGES, GROUP_M,
                     NUM_SMS, B_T)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
