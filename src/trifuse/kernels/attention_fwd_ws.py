"""Hopper (sm_90) flash attention forward, warp specialized in Gluon (the FlashAttention-3 schedule).

One program owns BM = 2 x 64 query rows of one (batch, query head). Three partitions:
- a producer warp loads the program's Q once and streams K and V blocks through a STAGES-deep ring of
  shared memory with TMA (separate K and V barriers, so QK^T starts before V has landed);
- two consumer warpgroups take 64 rows each and run the same key loop.

Two overlaps make the softmax (exp2, row max, row sums: about half the tensor cores' time per block) run
beside the MMAs instead of between them:
- ping-pong: the warpgroups take turns issuing their MMAs (the `turn` barriers), so one warpgroup's
  softmax runs while the other's MMAs keep the tensor cores busy;
- within a warpgroup, block j's QK^T and block j-1's PV are issued together, and block j's softmax runs
  while that PV is still in flight (P of block j-1 is kept in registers as the PV's A operand).

Causal alignment (top-left), the log2-domain scores with the scale folded into exp2's argument (so the
scale must be > 0) and the natural-log LSE are as in attention_fwd.py, whose grid order this kernel
shares. q, k, v, o are addressed by 4-D tensor descriptors [B, H, S, D] (any strides with a unit last
one, 16-byte aligned): rows past S read as zeros and are not stored. Gluon does not run in Triton's
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

from .attention_fwd import query_block

LOG2E = gl.constexpr(1.4426950408889634)
LN2 = gl.constexpr(0.6931471805599453)
WG_ROWS = gl.constexpr(64)  # query rows a consumer warpgroup owns (m64 MMAs)


@gluon.jit
def _tile_view(buf, ROWS: gl.constexpr, HEAD_D: gl.constexpr):
    """The 2-D [ROWS, HEAD_D] operand view of a [1, 1, ROWS, HEAD_D] TMA buffer (same bytes, same swizzle)."""
    return buf.reshape([ROWS, HEAD_D])


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty,
              b, hk, h, start_m, n_blocks, BN: gl.constexpr, STAGES: gl.constexpr):
    """One warp: Q (both warpgroups' halves) once, then every K and V block of the key range, in order."""
    mbarrier.expect(q_ready, 2 * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, h, start_m, 0], q_ready, q_bufs.index(0))
    tma.async_copy_global_to_shared(q_desc, [b, h, start_m + WG_ROWS, 0], q_ready, q_bufs.index(1))
    for j in range(n_blocks):
        s = j % STAGES
        mbarrier.wait(empty.index(s), ((j // STAGES) & 1) ^ 1)
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [b, hk, j * BN, 0], k_ready.index(s), k_bufs.index(s))
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [b, hk, j * BN, 0], v_ready.index(s), v_bufs.index(s))


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
def _wait_turn(turn, k, WG: gl.constexpr):
    # Warpgroup 0 goes first: its first wait is on the phase before the barrier's first, complete.
    mbarrier.wait(turn.index(WG), (k & 1) ^ (1 - WG))


@gluon.jit
def _consumer(q_bufs, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty, turn, o_desc, lse_ptr,
              b, h, start_m, Hq, Sq, Skv, hi_free, n_blocks, qk_scale,
              CAUSAL: gl.constexpr, BN: gl.constexpr, HEAD_D: gl.constexpr, STAGES: gl.constexpr,
              WG: gl.constexpr):
    """Warpgroup WG: rows start_m + 64 WG ... + 63 over every key block."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BN, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_D, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    dtype: gl.constexpr = q_bufs.dtype
    q = _tile_view(q_bufs.index(WG), WG_ROWS, HEAD_D)
    rows = start_m + WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=row_layout)
    zero_s = gl.zeros([WG_ROWS, BN], gl.float32, s_layout)
    mbarrier.wait(q_ready, 0)

    # Block 0: QK^T and the first softmax (no PV to overlap yet).
    mbarrier.wait(k_ready.index(0), 0)
    _wait_turn(turn, 0, WG)
    s = warpgroup_mma(q, _tile_view(k_bufs.index(0), BN, HEAD_D).permute((1, 0)), zero_s, use_acc=False,
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
        st = j % STAGES
        prev = (j - 1) % STAGES
        mbarrier.wait(k_ready.index(st), (j // STAGES) & 1)
        mbarrier.wait(v_ready.index(prev), ((j - 1) // STAGES) & 1)
        _wait_turn(turn, j, WG)
        s = warpgroup_mma(q, _tile_view(k_bufs.index(st), BN, HEAD_D).permute((1, 0)), zero_s, use_acc=False,
                          is_async=True)
        acc = warpgroup_mma(p, _tile_view(v_bufs.index(prev), BN, HEAD_D), acc, is_async=True)
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

    last = (n_blocks - 1) % STAGES
    mbarrier.wait(v_ready.index(last), ((n_blocks - 1) // STAGES) & 1)
    _wait_turn(turn, n_blocks, WG)
    acc = warpgroup_mma(p, _tile_view(v_bufs.index(last), BN, HEAD_D), acc, is_async=True)
    mbarrier.arrive(turn.index(1 - WG), count=1)
    acc = warpgroup_mma_wait(0, deps=(acc, ))
    mbarrier.arrive(empty.index(last), count=1)

    # Every row sees key 0 (top-left alignment, Skv >= 1), so l_i > 0. Q's buffer is free now: the output
    # goes out through it.
    out = acc / gl.expand_dims(gl.convert_layout(l_i, gl.SliceLayout(1, o_layout)), 1)
    o_buf = q_bufs.index(WG)
    _tile_view(o_buf, WG_ROWS, HEAD_D).store(out.to(dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [b, h, start_m + WG * WG_ROWS, 0], o_buf)
    lse = (m_i + gl.log2(l_i)) * LN2
    gl.store(lse_ptr + (b.to(gl.int64) * Hq + h) * Sq + rows, lse, mask=rows < Sq)
    tma.store_wait(0)


@gluon.jit
def attention_fwd_ws(q_desc, k_desc, v_desc, o_desc, lse_ptr, Hq, Hkv, Sq, Skv, sm_scale, chunk,
                     CAUSAL: gl.constexpr, STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                     PRODUCER_REGS: gl.constexpr):
    """q_desc / o_desc: [1, 1, 64, D] tiles of q (B, Hq, Sq, D) and o; k_desc / v_desc: [1, 1, BN, D] tiles
    of k, v (B, Hkv, Skv, D); lse (B, Hq, Sq) fp32 contiguous. chunk as in attention_fwd. Launch with
    num_warps=4 (the first consumer) and one program per (128-row query block, batch, query head)."""
    dtype: gl.constexpr = q_desc.dtype
    BN: gl.constexpr = k_desc.block_type.shape[2]
    HEAD_D: gl.constexpr = k_desc.block_type.shape[3]
    b64, hk64, h64, start_m = query_block(Hq, Hkv, Sq, chunk, 2 * WG_ROWS, CAUSAL)
    b = b64.to(gl.int32)
    hk = hk64.to(gl.int32)
    h = h64.to(gl.int32)
    full_n = (Skv // BN) * BN
    if CAUSAL:
        # Keys below the block's first row are visible to all its rows; the diagonal needs the mask.
        hi_free = gl.minimum((start_m // BN) * BN, full_n)
        hi = gl.minimum(start_m + 2 * WG_ROWS, Skv)
    else:
        hi_free = full_n
        hi = Skv
    n_blocks = gl.cdiv(hi, BN)
    qk_scale = sm_scale * LOG2E

    q_bufs = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_ready, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # both consumers release a stage
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    # Argument tuples written out in place: a constexpr kept in a tuple variable arrives as a tensor.
    gl.warp_specialize([
        (_consumer, (q_bufs, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty, turn, o_desc, lse_ptr, b, h,
                     start_m, Hq, Sq, Skv, hi_free, n_blocks, qk_scale, CAUSAL, BN, HEAD_D, STAGES, 0)),
        (_consumer, (q_bufs, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty, turn, o_desc, lse_ptr, b, h,
                     start_m, Hq, Sq, Skv, hi_free, n_blocks, qk_scale, CAUSAL, BN, HEAD_D, STAGES, 1)),
        (_producer, (q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty, b, hk, h,
                     start_m, n_blocks, BN, STAGES)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
