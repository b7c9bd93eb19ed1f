"""Hopper (sm_90) GEMM + bias + activation (+ dropout), warp specialized in Gluon, the epilogue in warps of
its own ("cooperative" main loop).

Two consumer warpgroups share each 128 x 256 output tile (rows 0-63 and 64-127 of the same ring stage), as
the Triton kernel's 8 warps do, so the main loop keeps the 128 x 256 tile's operand reuse that the ping-pong
kernel's 128 x 128 tiles (gemm_ws.py) lose. A producer warp (gemm_ws._producer) fills a ring of STAGES
shared-memory stages by TMA. The consumers' accumulators start at the bias; after the last MMA they hand
the tile over as 16-bit values in a staging buffer and start the next tile's main loop at once. The
epilogue partition applies the activation (kernels/activations.py) and dropout (the mask of
activations.dropout_keep, bit for bit) to the staged tile, stores it by TMA and frees the buffer, so the
epilogue of one tile runs beside the next tile's MMAs.

The consumers are the default partition and a worker; the epilogue takes two warps beside the producer warp,
so the kernel's 11 warps (padded to 12) fit 168 registers each. ptxas compiles a kernel to one register
target and the consumers' MMAs need 154, so a four-warp epilogue (16 warps, 128 registers) cannot be had.

The activation reads the 16-bit a @ b + bias, as eager `act(F.linear(x, w, b))` does. a (M, K) must be
K-contiguous; b is (N, K) K-contiguous (B_T) or (K, N) N-contiguous. Gluon does not run in Triton's
interpreter: this kernel is tested on the GPU only.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma_wait,
)

from .activations import activation
from .gemm import grouped_tile
from .gemm_ws import _producer, keep_rows, mma_step
from .mbarriers import mbarriers

EPI_ELEMENTS = gl.constexpr(32)  # elements of the staged tile an epilogue thread holds at a time


@gluon.jit
def _consumer(a_bufs, b_bufs, stage, ready, empty, staged, free, bias_ptr, M, N, K,
              BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, STAGES: gl.constexpr,
              GROUP_M: gl.constexpr, NUM_SMS: gl.constexpr, HAS_BIAS: gl.constexpr, B_T: gl.constexpr,
              WG: gl.constexpr):
    """Warpgroup WG (0 or 1): rows WG * BM / 2 onwards of every tile's main loop; the fp32 accumulator plus
    bias goes to the staging buffer as 16-bit values."""
    HALF: gl.constexpr = BM // 2
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                     instr_shape=[16, BN, 16])
    num_tiles = gl.cdiv(M, BM) * gl.cdiv(N, BN)
    k_tiles = gl.cdiv(K, BK)
    rows_out = stage.slice(WG * HALF, HALF, dim=0)
    acc = gl.zeros([HALF, BN], gl.float32, layout)
    it = 0
    local = 0
    for tile in range(gl.program_id(0), num_tiles, NUM_SMS):
        _, pid_n = grouped_tile(tile, M, N, BM, BN, GROUP_M)
        on = pid_n * BN
        if HAS_BIAS:  # the accumulator starts at the bias: no 64 bias registers a thread beside it at the end
            cols = on + gl.arange(0, BN, layout=gl.SliceLayout(0, layout))
            bias = gl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(gl.float32)
            acc = gl.zeros([HALF, BN], gl.float32, layout) + gl.expand_dims(bias, 0)
        for ki in range(k_tiles):
            # This warpgroup's rows of the a tile; a stage is refilled once both warpgroups have freed it.
            s = it % STAGES
            acc = mma_step(a_bufs.index(s).slice(WG * HALF, HALF, dim=0), b_bufs, ready, empty, s, it, acc,
                           HAS_BIAS or ki > 0, ki > 0, STAGES, B_T)
            it += 1
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES), count=1)
        mbarrier.wait(free, (local & 1) ^ 1)  # the epilogue has stored the previous tile
        rows_out.store(acc.to(stage.dtype))
        mbarrier.arrive(staged, count=1)
        local += 1  # noqa: SIM113 -- no enumerate in jit code


@gluon.jit
def _epilogue(stage, staged, free, c_desc, seed_ptr, p, M, N,
              BM: gl.constexpr, BN: gl.constexpr, GROUP_M: gl.constexpr, NUM_SMS: gl.constexpr,
              ACT: gl.constexpr, DROPOUT: gl.constexpr):
    """Activation and dropout on each staged tile, a block of ROWS rows of one column chunk at a time in
    place, then its TMA store."""
    # The staged tile lies in shared memory as BN / CW column chunks of BM x CW (CW = one 128-byte swizzle
    # row), one after the other, so a block of ROWS rows of one chunk is contiguous: the loop walks those
    # blocks through a [blocks, ROWS, CW] view (a loop, not unrolled: the unrolled tile's code did not fit
    # the instruction cache with two epilogue warps).
    gl.static_assert(stage.layout.swizzle_byte_width == 128, "the staged tile's chunks are 128-byte rows")
    CW: gl.constexpr = 128 * 8 // stage.layout.element_bitwidth
    G: gl.constexpr = CW // 8
    ROWS: gl.constexpr = EPI_ELEMENTS * 32 * gl.num_warps() // CW
    PER_CHUNK: gl.constexpr = BM // ROWS
    blocks = stage._reinterpret(stage.dtype, [BN // CW * PER_CHUNK, ROWS, CW], stage.layout)
    # Each thread holds 8 consecutive columns of a row: one Philox call serves all 8 (keep_rows).
    rows_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // G, G], [gl.num_warps(), 1], [1, 0])
    num_tiles = gl.cdiv(M, BM) * gl.cdiv(N, BN)
    seed = 0
    if DROPOUT:
        seed = gl.load(seed_ptr)
    threshold = (p * 65536.0 + 0.5).to(gl.uint32)
    scale = 1.0 / (1.0 - p)
    local = 0
    for tile in range(gl.program_id(0), num_tiles, NUM_SMS):
        pid_m, pid_n = grouped_tile(tile, M, N, BM, BN, GROUP_M)
        om, on = pid_m * BM, pid_n * BN
        mbarrier.wait(staged, local & 1)
        for i in range(BN // CW * PER_CHUNK):
            block = blocks.index(i)  # rows (i % PER_CHUNK) * ROWS.., columns (i // PER_CHUNK) * CW..
            tile3 = gl.reshape(block.load(rows_layout), [ROWS, G, 8]).to(gl.float32)
            y = activation(tile3, ACT)
            if DROPOUT:
                keep = keep_rows(tile3, seed, threshold, om + (i % PER_CHUNK) * ROWS, on + (i // PER_CHUNK) * CW)
                y = y * gl.where(keep, scale, 0.0)  # a dropped inf or nan gives nan, as in torch
            block.store(gl.reshape(y.to(stage.dtype), [ROWS, CW]))
        fence_async_shared()
        tma.async_copy_shared_to_global(c_desc, [om, on], stage)
        tma.store_wait(0)
        mbarrier.arrive(free, count=1)
        local += 1  # noqa: SIM113 -- no enumerate in jit code


@gluon.jit
def gemm_coop_kernel(a_desc, b_desc, c_desc, bias_ptr, seed_ptr, p, M, N, K,
                     ACT: gl.constexpr, HAS_BIAS: gl.constexpr, DROPOUT: gl.constexpr, B_T: gl.constexpr,
                     STAGES: gl.constexpr, GROUP_M: gl.constexpr, NUM_SMS: gl.constexpr,
                     CONSUMER_REGS: gl.constexpr, OTHER_REGS: gl.constexpr):
    """a_desc [BM, BK] tiles of a; b_desc [BN, BK] (B_T) or [BK, BN] tiles of b; c_desc [BM, BN] tiles of
    the output (BM = 128, the two consumers' halves). Launch with num_warps=4 (the first consumer) and a grid
    of min(SMs, tiles) = NUM_SMS; CONSUMER_REGS for the second consumer, OTHER_REGS for the epilogue and
    producer warps (one warpgroup's registers)."""
    dtype: gl.constexpr = a_desc.dtype
    BM: gl.constexpr = c_desc.block_type.shape[0]
    BN: gl.constexpr = c_desc.block_type.shape[1]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    a_bufs = gl.allocate_shared_memory(dtype, [STAGES] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
    stage = gl.allocate_shared_memory(dtype, [BM, BN], c_desc.layout)
    ready = mbarriers(STAGES, 1)
    empty = mbarriers(STAGES, 2)  # both consumers free each stage
    staged = mbarriers(1, 2).index(0)  # both consumers' halves are in `stage`
    free = mbarriers(1, 1).index(0)  # the epilogue has stored `stage`
    # Argument tuples written out in place: a constexpr kept in a tuple variable arrives as a tensor.
    gl.warp_specialize([
        (_consumer, (a_bufs, b_bufs, stage, ready, empty, staged, free, bias_ptr, M, N, K, BM, BN, BK, STAGES,
                     GROUP_M, NUM_SMS, HAS_BIAS, B_T, 0)),
        (_consumer, (a_bufs, b_bufs, stage, ready, empty, staged, free, bias_ptr, M, N, K, BM, BN, BK, STAGES,
                     GROUP_M, NUM_SMS, HAS_BIAS, B_T, 1)),
        (_epilogue, (stage, staged, free, c_desc, seed_ptr, p, M, N, BM, BN, GROUP_M, NUM_SMS, ACT, DROPOUT)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, BM, BN, BK, STAGES, GROUP_M, NUM_SMS,
                     B_T)),
    ], [4, 2, 1], [CONSUMER_REGS, OTHER_REGS, OTHER_REGS])
