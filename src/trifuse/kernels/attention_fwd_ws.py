"""Hopper (sm_90) flash attention forward, warp specialized in Gluon (the FlashAttention-3 schedule).

A tile is 2 x 64 query rows of one (batch, query head), in the longest-first order attention_fwd.py uses.
A program takes one tile, or (persistent, fewer programs than tiles) tiles in rounds or, by default, from
an atomic counter as it finishes each (SCHEDULE). Three partitions:
- a producer warp takes the tiles, hands their indices to the consumers (shared memory, before the Q
  barrier), loads each tile's Q and streams its K and V blocks through a STAGES-deep ring of shared
  memory with TMA (separate K and V barriers, so QK^T starts before V has landed). The ring runs across
  tiles: the next tile's K and V loads overlap this tile's last blocks and its output stores, which a
  program-per-tile grid leaves exposed; a warpgroup's Q buffer carries its O tile out and then goes back
  to the producer for the next tile's Q;
- two consumer warpgroups take 64 rows each and run the same key loop, then store their rows of O (through
  their Q buffer and a TMA store) and the LSE.

Two overlaps make the softmax (exp2, row max, row sums: about half the tensor cores' time per block) run
beside the MMAs instead of between them:
- ping-pong: the warpgroups take turns issuing their MMAs (the `turn` barriers), so one warpgroup's
  softmax runs while the other's MMAs keep the tensor cores busy;
- within a warpgroup, block j's QK^T and block j-1's PV are issued together, and block j's softmax runs
  while that PV is still in flight (P of block j-1 is kept in registers as the PV's A operand).

Causal alignment (top-left), the log2-domain scores with the scale folded into exp2's argument (so the
scale must be > 0) and the natural-log LSE are as in attention_fwd.py, whose grid order this kernel
shares. q, k, v are read and o written through 4-D tensor descriptors [B, H, S, D] (any strides with a unit
last one, 16-byte aligned): rows past S read as zeros and are not written. Gluon does not run in Triton's
interpreter: this kernel is tested on the GPU only.
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

from .attention_fwd import tile_of
from .mbarriers import mbarriers

LOG2E = gl.constexpr(1.4426950408889634)
LN2 = gl.constexpr(0.6931471805599453)
WG_ROWS = gl.constexpr(64)  # query rows a consumer warpgroup owns (m64 MMAs)


@gluon.constexpr_function
def wgmma_layout(n):
    """The accumulator layout of one warpgroup's m64 x n wgmma (also the backward kernels')."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])


@gluon.jit
def key_range(start_m, Skv, BN: gl.constexpr, CAUSAL: gl.constexpr):
    """Key blocks of a tile of 2 x WG_ROWS query rows from start_m, and the first key that needs a mask
    (the causal diagonal, the ragged Skv tail)."""
    full_n = (Skv // BN) * BN
    if CAUSAL:
        # Keys below the tile's first row are visible to all its rows; the diagonal needs the mask.
        hi_free = gl.minimum((start_m // BN) * BN, full_n)
        hi = gl.minimum(start_m + 2 * WG_ROWS, Skv)
    else:
        hi_free = full_n
        hi = Skv
    return gl.cdiv(hi, BN), hi_free


@gluon.jit
def _block_range(tile, tiles, Hq, Hkv, Sq, Skv, chunk, BN: gl.constexpr, CAUSAL: gl.constexpr):
    """(batch, KV head, query head, first row) of a tile as int32, its key blocks and the first key that
    needs a mask."""
    b64, hk64, h64, start_m = tile_of(tile, tiles, Hq, Hkv, Sq, chunk, 2 * WG_ROWS, CAUSAL)
    n_blocks, hi_free = key_range(start_m, Skv, BN, CAUSAL)
    return b64.to(gl.int32), hk64.to(gl.int32), h64.to(gl.int32), start_m, n_blocks, hi_free


@gluon.jit
def load_kv_block(k_desc, v_desc, k_bufs, v_bufs, k_ready, v_ready, empty, b, hk, j, it, STAGES: gl.constexpr):
    """Key block j of (batch b, KV head hk) into ring position `it`, once the consumers have freed it; K and
    V on their own barriers, so QK^T can start before V lands."""
    BN: gl.constexpr = k_desc.block_type.shape[2]
    s = it % STAGES
    mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
    mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [b, hk, j * BN, 0], k_ready.index(s), k_bufs.index(s))
    mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(v_desc, [b, hk, j * BN, 0], v_ready.index(s), v_bufs.index(s))


# How a program gets its tiles (SCHEDULE): one program a tile; round-robin over a persistent grid; or
# dynamic, a persistent grid whose programs take the next tile from a global counter when they finish one
# (as the hardware's block scheduler would, while the next tile's loads still overlap this one's tail).
GRID = gl.constexpr(0)
ROUND_ROBIN = gl.constexpr(1)
DYNAMIC = gl.constexpr(2)


@gluon.jit
def next_tile(tile, tiles, counter, SCHEDULE: gl.constexpr):
    if SCHEDULE == GRID:
        return tiles
    elif SCHEDULE == ROUND_ROBIN:
        return tile + gl.num_programs(0)
    else:  # every program starts at its own id; the counter hands out the tiles after the first round
        return gl.atomic_add(counter, 1) + gl.num_programs(0)


@gluon.jit
def publish_tile(tile_ids, w: gl.constexpr, tile):
    """The producer tells consumer w its next tile (>= tiles: none), before the barrier that wakes it."""
    tile_ids.index(w).store(gl.full([1], tile, gl.int32, gl.BlockedLayout([1], [32], [1], [0])))
    gl.thread_barrier()


@gluon.jit
def read_tile(tile_ids, WG: gl.constexpr):
    return gl.max(tile_ids.index(WG).load(gl.BlockedLayout([1], [32], [4], [0])), 0)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, tile_ids, q_ready, q_empty, k_ready, v_ready,
              empty, counter, Hq, Hkv, Sq, Skv, chunk, tiles, BN: gl.constexpr, STAGES: gl.constexpr,
              CAUSAL: gl.constexpr, SCHEDULE: gl.constexpr):
    """One warp: per tile, its index and both warpgroups' Q halves, then every K and V block of the tile's
    key range; at the end, an index past the tiles."""
    it = 0  # ring position, across tiles
    n = 0  # tiles done by this program
    tile = gl.program_id(0)
    while tile < tiles:
        b, hk, h, start_m, n_blocks, _ = _block_range(tile, tiles, Hq, Hkv, Sq, Skv, chunk, BN, CAUSAL)
        for w in gl.static_range(2):
            mbarrier.wait(q_empty.index(w), (n & 1) ^ 1)
            publish_tile(tile_ids, w, tile)
            mbarrier.expect(q_ready.index(w), q_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(q_desc, [b, h, start_m + w * WG_ROWS, 0], q_ready.index(w),
                                            q_bufs.index(w))
        for j in range(n_blocks):
            load_kv_block(k_desc, v_desc, k_bufs, v_bufs, k_ready, v_ready, empty, b, hk, j, it, STAGES)
            it += 1
        n += 1
        tile = next_tile(tile, tiles, counter, SCHEDULE)
    for w in gl.static_range(2):
        mbarrier.wait(q_empty.index(w), (n & 1) ^ 1)
        publish_tile(tile_ids, w, tile)
        mbarrier.arrive(q_ready.index(w), count=1)


@gluon.jit
def _scores(s, j, rows, hi_free, Skv, CAUSAL: gl.constexpr, BN: gl.constexpr, layout: gl.constexpr):
    """Scores of key block j with the causal and key-bounds masks applied where the block needs them."""
    if j * BN >= hi_free:
        cols = j * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, layout))
        valid = gl.expand_dims(cols < Skv, 0)
        if CAUSAL:
            valid = valid & (gl.expand_dims(cols, 0) <= gl.expand_dims(rows, 1))
        s = gl.where(valid, s, -float("inf"))
    return s


@gluon.jit
def wait_turn(turn, k, WG: gl.constexpr):
    # Warpgroup 0 goes first: its first wait is on the phase before the barrier's first, complete.
    mbarrier.wait(turn.index(WG), (k & 1) ^ (1 - WG))


@gluon.jit
def _kv_tile(bufs, s, BN: gl.constexpr, HEAD_D: gl.constexpr):
    """Stage s of a K or V ring as the 2-D [BN, HEAD_D] operand (same bytes as the [1, 1, BN, D] TMA box)."""
    return bufs.index(s).reshape([BN, HEAD_D])


@gluon.jit
def _consumer(q_bufs, k_bufs, v_bufs, tile_ids, q_ready, q_empty, k_ready, v_ready, empty, turn, o_desc, lse_ptr,
              Hq, Hkv, Sq, Skv, chunk, tiles, qk_scale,
              CAUSAL: gl.constexpr, BN: gl.constexpr, HEAD_D: gl.constexpr, STAGES: gl.constexpr,
              WG: gl.constexpr):
    """Warpgroup WG: rows 64 WG ... 64 WG + 63 of each tile the producer hands it, over every key block."""
    s_layout: gl.constexpr = wgmma_layout(BN)
    o_layout: gl.constexpr = wgmma_layout(HEAD_D)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    dtype: gl.constexpr = q_bufs.dtype
    q = q_bufs.index(WG).reshape([WG_ROWS, HEAD_D])
    zero_s = gl.zeros([WG_ROWS, BN], gl.float32, s_layout)
    it = 0  # ring position, across tiles
    k = 0  # turns taken
    n = 0  # tiles done
    mbarrier.wait(q_ready.index(WG), 0)
    tile = read_tile(tile_ids, WG)
    while tile < tiles:
        b, _, h, start_m, n_blocks, hi_free = _block_range(tile, tiles, Hq, Hkv, Sq, Skv, chunk, BN, CAUSAL)
        rows = start_m + WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=gl.SliceLayout(1, s_layout))

        # Block 0: QK^T and the first softmax (no PV to overlap yet).
        st = it % STAGES
        mbarrier.wait(k_ready.index(st), (it // STAGES) & 1)
        wait_turn(turn, k, WG)
        s = warpgroup_mma(q, _kv_tile(k_bufs, st, BN, HEAD_D).permute((1, 0)), zero_s, use_acc=False,
                          is_async=True)
        mbarrier.arrive(turn.index(1 - WG), count=1)
        s = warpgroup_mma_wait(0, deps=(s, ))
        s = _scores(s, 0, rows, hi_free, Skv, CAUSAL, BN, s_layout)
        m_i = gl.max(s, 1) * qk_scale
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_i, 1))
        l_i = gl.sum(p, 1)
        p = gl.convert_layout(p.to(dtype), p_layout)
        acc = gl.zeros([WG_ROWS, HEAD_D], gl.float32, o_layout)

        for j in range(1, n_blocks):
            prev = st
            st = (it + j) % STAGES
            mbarrier.wait(k_ready.index(st), ((it + j) // STAGES) & 1)
            mbarrier.wait(v_ready.index(prev), ((it + j - 1) // STAGES) & 1)
            wait_turn(turn, k + j, WG)
            s = warpgroup_mma(q, _kv_tile(k_bufs, st, BN, HEAD_D).permute((1, 0)), zero_s, use_acc=False,
                              is_async=True)
            acc = warpgroup_mma(p, _kv_tile(v_bufs, prev, BN, HEAD_D), acc, is_async=True)
            mbarrier.arrive(turn.index(1 - WG), count=1)
            s = warpgroup_mma_wait(1, deps=(s, ))  # QK^T done; block j-1's PV may still run
            s = _scores(s, j, rows, hi_free, Skv, CAUSAL, BN, s_layout)
            m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
            p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
            alpha = gl.exp2(m_i - m_new)
            l_i = l_i * alpha + gl.sum(p, 1)
            m_i = m_new
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            mbarrier.arrive(empty.index(prev), count=1)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
            p = gl.convert_layout(p.to(dtype), p_layout)

        mbarrier.wait(v_ready.index(st), ((it + n_blocks - 1) // STAGES) & 1)
        wait_turn(turn, k + n_blocks, WG)
        acc = warpgroup_mma(p, _kv_tile(v_bufs, st, BN, HEAD_D), acc, is_async=True)
        mbarrier.arrive(turn.index(1 - WG), count=1)
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        mbarrier.arrive(empty.index(st), count=1)
        it += n_blocks
        k += n_blocks + 1
        n += 1

        # Every row sees key 0 (top-left alignment, Skv >= 1), so l_i > 0. O leaves through this warpgroup's
        # Q buffer (its last QK^T is done) and a TMA store, which clips rows past Sq: 16-byte stmatrix writes
        # and one bulk copy instead of 4-byte stores from the MMA layout, 8 rows a warp instruction. The
        # buffer goes back to the producer for the next tile's Q once the copy has read it.
        inv_l = gl.convert_layout(1.0 / l_i, gl.SliceLayout(1, o_layout))
        q.store((acc * gl.expand_dims(inv_l, 1)).to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [b, h, start_m + WG * WG_ROWS, 0], q_bufs.index(WG))
        lse = (m_i + gl.log2(l_i)) * LN2
        gl.store(lse_ptr + (b.to(gl.int64) * Hq + h) * Sq + rows, lse, mask=rows < Sq)
        tma.store_wait(0)
        mbarrier.arrive(q_empty.index(WG), count=1)
        mbarrier.wait(q_ready.index(WG), n & 1)
        tile = read_tile(tile_ids, WG)


@gluon.jit
def attention_fwd_ws(q_desc, k_desc, v_desc, o_desc, lse_ptr, counter,
                     Hq, Hkv, Sq, Skv, sm_scale, chunk, tiles,
                     CAUSAL: gl.constexpr, STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
                     CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    """q_desc / o_desc: [1, 1, 64, D] tiles of q and o (B, Hq, Sq, D); k_desc / v_desc: [1, 1, BN, D] tiles of
    k, v (B, Hkv, Skv, D); lse (B, Hq, Sq) fp32 contiguous. chunk as in
    attention_fwd; tiles = cdiv(Sq, 128) x B x Hq. Launch with num_warps=4 (the first consumer) and
    `tiles` programs (SCHEDULE GRID), or at most `tiles` (ROUND_ROBIN, DYNAMIC: counter, an int32 zero)."""
    dtype: gl.constexpr = q_desc.dtype
    BN: gl.constexpr = k_desc.block_type.shape[2]
    HEAD_D: gl.constexpr = k_desc.block_type.shape[3]
    qk_scale = sm_scale * LOG2E

    q_bufs = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    tile_ids = gl.allocate_shared_memory(gl.int32, [2, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_ready = mbarriers(2, 1)
    q_empty = mbarriers(2, 1)
    k_ready = mbarriers(STAGES, 1)
    v_ready = mbarriers(STAGES, 1)
    empty = mbarriers(STAGES, 2)  # both consumers release a stage
    turn = mbarriers(2, 1)
    # Argument tuples written out in place: a constexpr kept in a tuple variable arrives as a tensor.
    gl.warp_specialize([
        (_consumer, (q_bufs, k_bufs, v_bufs, tile_ids, q_ready, q_empty, k_ready, v_ready, empty, turn, o_desc,
                     lse_ptr, Hq, Hkv, Sq, Skv, chunk, tiles, qk_scale, CAUSAL, BN,
                     HEAD_D, STAGES, 0)),
        (_consumer, (q_bufs, k_bufs, v_bufs, tile_ids, q_ready, q_empty, k_ready, v_ready, empty, turn, o_desc,
                     lse_ptr, Hq, Hkv, Sq, Skv, chunk, tiles, qk_scale, CAUSAL, BN,
                     HEAD_D, STAGES, 1)),
        (_producer, (q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, tile_ids, q_ready, q_empty, k_ready, v_ready,
                     empty, counter, Hq, Hkv, Sq, Skv, chunk, tiles, BN, STAGES, CAUSAL, SCHEDULE)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
