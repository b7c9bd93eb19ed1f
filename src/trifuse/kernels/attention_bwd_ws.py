"""Hopper (sm_90) flash attention backward in Gluon, warp specialized: dK and dV (used by default on sm_90,
see ops.attention_ws.ws_bwd_applies); dQ below (EXPERIMENTAL, opt-in: not faster than the Triton kernel).

A dK/dV program owns 128 keys of one (batch, KV head): two consumer warpgroups of 64 keys each keep their
K and V rows in shared memory and their dK, dV accumulators in registers, and loop over the query blocks
(BM rows) of every query head of the KV group (or of one of `split` equal slices of it: fp32 partials the
launcher sums in a fixed order), which a producer warp streams through a ring with TMA: Q, dO, and LSE and
delta as 1-D boxes (which keeps their pointer math out of the consumers' registers).
Per query block, in the transposed form that keeps keys on the rows:
  S^T = K Q^T, P^T = exp2(S^T * scale * log2 e - lse2), dP^T = V dO^T, dS^T = P^T (dP^T - delta),
  dV += P^T dO, dK += dS^T Q     (dK scaled once at the end)
with P^T and dS^T as register A operands. The warpgroups take turns at the tensor cores (`turn` barriers,
three turns a block: S^T; dP^T with dV; dK), so one's elementwise steps overlap the other's MMAs.
Deterministic: no atomics. Query rows past Sq read as zeros, but their LSE is padding or the next head's,
so the last query block masks P^T past Sq (as the causal diagonal does).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from .attention_fwd import longest_first, tile_of
from .attention_fwd_ws import (
    LOG2E,
    WG_ROWS,
    key_range,
    load_kv_block,
    next_tile,
    publish_tile,
    read_tile,
    wait_turn,
    wgmma_layout,
)
from .mbarriers import mbarriers

WG_KEYS = gl.constexpr(64)  # keys a dK/dV consumer warpgroup owns (m64 MMAs); dQ's own WG_ROWS query rows


@gluon.jit
def _key_block(tile, tiles, Hkv, Skv, Sq, chunk, split, BM: gl.constexpr, CAUSAL: gl.constexpr):
    """(batch, KV head, head slice, first key) of a tile and its first and end query blocks. With causal,
    low key blocks see the most query rows and come first (longest_first over `chunk` units)."""
    num_n = gl.cdiv(Skv, 2 * WG_KEYS)
    nb, unit = longest_first(tile, tiles // num_n, chunk, num_n, CAUSAL)
    bk = unit // split
    start_n = nb * 2 * WG_KEYS
    if CAUSAL:
        m_lo = start_n // BM  # query i sees key j iff j <= i (top-left)
    else:
        m_lo = 0
    return bk // Hkv, bk % Hkv, unit % split, start_n, m_lo, gl.cdiv(Sq, BM)


@gluon.jit
def _producer(q_desc, do_desc, k_desc, v_desc, lse_desc, delta_desc, q_bufs, do_bufs, lse_bufs, delta_bufs,
              k_smem, v_smem, tile_ids, kv_ready, kv_empty, ready, empty, counter, Hq, Hkv, Sq, Skv, row_pitch,
              chunk, split, tiles, STAGES: gl.constexpr, CAUSAL: gl.constexpr, SCHEDULE: gl.constexpr):
    """One warp: per tile, its index and both warpgroups' K and V rows (once the consumers are done with
    the last tile's), then Q, dO, LSE and delta of every query block of every query head of the slice, in
    order, into the ring; at the end, an index past the tiles."""
    BM: gl.constexpr = q_desc.block_type.shape[2]
    heads = Hq // Hkv // split
    it = 0  # ring position, across tiles
    n = 0  # tiles done
    tile = gl.program_id(0)
    while tile < tiles:
        b, hk, part, start_n, m_lo, n_m = _key_block(tile, tiles, Hkv, Skv, Sq, chunk, split, BM, CAUSAL)
        mbarrier.wait(kv_empty, (n & 1) ^ 1)
        publish_tile(tile_ids, 0, tile)
        mbarrier.expect(kv_ready, 2 * (k_desc.block_type.nbytes + v_desc.block_type.nbytes))
        for w in gl.static_range(2):
            tma.async_copy_global_to_shared(k_desc, [b, hk, start_n + w * WG_KEYS, 0], kv_ready, k_smem.index(w))
            tma.async_copy_global_to_shared(v_desc, [b, hk, start_n + w * WG_KEYS, 0], kv_ready, v_smem.index(w))
        for g in range(heads):
            h = hk * (heads * split) + part * heads + g
            row0 = (b * Hq + h) * row_pitch
            for mb in range(m_lo, n_m):
                s = it % STAGES
                mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
                mbarrier.expect(ready.index(s), q_desc.block_type.nbytes + do_desc.block_type.nbytes
                                + lse_desc.block_type.nbytes + delta_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(q_desc, [b, h, mb * BM, 0], ready.index(s), q_bufs.index(s))
                tma.async_copy_global_to_shared(do_desc, [b, h, mb * BM, 0], ready.index(s), do_bufs.index(s))
                tma.async_copy_global_to_shared(lse_desc, [row0 + mb * BM], ready.index(s), lse_bufs.index(s))
                tma.async_copy_global_to_shared(delta_desc, [row0 + mb * BM], ready.index(s),
                                                delta_bufs.index(s))
                it += 1
        n += 1
        tile = next_tile(tile, tiles, counter, SCHEDULE)
    mbarrier.wait(kv_empty, (n & 1) ^ 1)
    publish_tile(tile_ids, 0, tile)
    mbarrier.arrive(kv_ready, count=1)


@gluon.jit
def _consumer(q_bufs, do_bufs, lse_bufs, delta_bufs, k_smem, v_smem, tile_ids, kv_ready, kv_empty, ready, empty,
              turn, dk_ptr, dv_ptr, stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dvs, stride_dvb,
              stride_dvh, stride_dvn, Hq, Hkv, Sq, Skv, sm_scale, chunk, split, tiles, CAUSAL: gl.constexpr,
              STAGES: gl.constexpr, WG: gl.constexpr):
    """Warpgroup WG: keys start_n + 64 WG ... + 63 of each tile the producer hands it, against every query
    block of the tile's heads."""
    BM: gl.constexpr = q_bufs.type.shape[3]
    HEAD_D: gl.constexpr = q_bufs.type.shape[4]
    dtype: gl.constexpr = q_bufs.dtype
    st_layout: gl.constexpr = wgmma_layout(BM)
    acc_layout: gl.constexpr = wgmma_layout(HEAD_D)
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    vec_layout: gl.constexpr = gl.SliceLayout(0, st_layout)
    heads = Hq // Hkv // split
    qk_scale = sm_scale * LOG2E
    kw = k_smem.index(WG).reshape([WG_KEYS, HEAD_D])
    vw = v_smem.index(WG).reshape([WG_KEYS, HEAD_D])
    zero_st = gl.zeros([WG_KEYS, BM], gl.float32, st_layout)
    it = 0  # ring position, across tiles
    n = 0  # tiles done
    mbarrier.wait(kv_ready, 0)
    tile = read_tile(tile_ids, 0)
    while tile < tiles:
        _, _, _, start_n, m_lo, n_m = _key_block(tile, tiles, Hkv, Skv, Sq, chunk, split, BM, CAUSAL)
        keys = start_n + WG * WG_KEYS + gl.arange(0, WG_KEYS, layout=gl.SliceLayout(1, st_layout))
        dk = gl.zeros([WG_KEYS, HEAD_D], gl.float32, acc_layout)
        dv = gl.zeros([WG_KEYS, HEAD_D], gl.float32, acc_layout)
        for g in range(heads):
            for mb in range(m_lo, n_m):
                s = it % STAGES
                mbarrier.wait(ready.index(s), (it // STAGES) & 1)
                q = q_bufs.index(s).reshape([BM, HEAD_D])
                do = do_bufs.index(s).reshape([BM, HEAD_D])

                # Three turns a block, so S^T and dP^T never hold registers at the same time: S^T; then
                # dP^T with dV (P^T is ready); then dK.
                wait_turn(turn, 3 * it, WG)
                s_t = warpgroup_mma(kw, q.permute((1, 0)), zero_st, use_acc=False, is_async=True)
                mbarrier.arrive(turn.index(1 - WG), count=1)
                s_t = warpgroup_mma_wait(0, deps=(s_t, ))
                lse2 = lse_bufs.index(s).load(vec_layout) * LOG2E
                p_t = gl.exp2(s_t * qk_scale - gl.expand_dims(lse2, 0))
                if (mb + 1) * BM > Sq:  # the last block: its rows past Sq read padding or the next head's LSE
                    rows = mb * BM + gl.arange(0, BM, layout=vec_layout)
                    p_t = gl.where(gl.expand_dims(rows < Sq, 0), p_t, 0.0)
                if CAUSAL:  # noqa: SIM102 -- a constexpr test outside, a runtime one inside
                    if mb * BM < start_n + 2 * WG_KEYS:  # the diagonal: key j is seen by rows i >= j
                        rows = mb * BM + gl.arange(0, BM, layout=vec_layout)
                        p_t = gl.where(gl.expand_dims(rows, 0) >= gl.expand_dims(keys, 1), p_t, 0.0)
                p_a = gl.convert_layout(p_t.to(dtype), a_layout)

                wait_turn(turn, 3 * it + 1, WG)
                dp_t = warpgroup_mma(vw, do.permute((1, 0)), zero_st, use_acc=False, is_async=True)
                dv = warpgroup_mma(p_a, do, dv, is_async=True)
                mbarrier.arrive(turn.index(1 - WG), count=1)
                dp_t = warpgroup_mma_wait(1, deps=(dp_t, ))
                delta = delta_bufs.index(s).load(vec_layout)
                ds_a = gl.convert_layout((p_t * (dp_t - gl.expand_dims(delta, 0))).to(dtype), a_layout)

                wait_turn(turn, 3 * it + 2, WG)
                dk = warpgroup_mma(ds_a, q, dk, is_async=True)
                mbarrier.arrive(turn.index(1 - WG), count=1)
                dv, dk = warpgroup_mma_wait(0, deps=(dv, dk))
                mbarrier.arrive(empty.index(s), count=1)
                it += 1
        # K and V are read: the producer may load the next tile's while this one's results are stored.
        mbarrier.arrive(kv_empty, count=1)

        # Recomputed rather than kept in registers through the loop.
        b, hk, part, start_n, _, _ = _key_block(tile, tiles, Hkv, Skv, Sq, chunk, split, BM, CAUSAL)
        key_rows = start_n + WG * WG_KEYS + gl.arange(0, WG_KEYS, layout=gl.SliceLayout(1, acc_layout))
        cols = gl.arange(0, HEAD_D, layout=gl.SliceLayout(0, acc_layout))
        ok = gl.expand_dims(key_rows < Skv, 1)
        rows64 = gl.expand_dims(key_rows.to(gl.int64), 1)
        dk_base = dk_ptr + part.to(gl.int64) * stride_dks + b.to(gl.int64) * stride_dkb + hk.to(gl.int64) * stride_dkh
        gl.store(dk_base + rows64 * stride_dkn + gl.expand_dims(cols, 0),
                 (dk * sm_scale).to(dk_ptr.dtype.element_ty), mask=ok)
        dv_base = dv_ptr + part.to(gl.int64) * stride_dvs + b.to(gl.int64) * stride_dvb + hk.to(gl.int64) * stride_dvh
        gl.store(dv_base + rows64 * stride_dvn + gl.expand_dims(cols, 0), dv.to(dv_ptr.dtype.element_ty), mask=ok)
        n += 1
        mbarrier.wait(kv_ready, n & 1)
        tile = read_tile(tile_ids, 0)


@gluon.jit
def attention_bwd_dkdv_ws(q_desc, do_desc, k_desc, v_desc, lse_desc, delta_desc, dk_ptr, dv_ptr, counter,
                          stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dvs, stride_dvb, stride_dvh,
                          stride_dvn, Hq, Hkv, Sq, Skv, row_pitch, sm_scale, chunk, split, tiles,
                          CAUSAL: gl.constexpr, STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
                          CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    """q_desc / do_desc: [1, 1, BM, D] tiles of q, do (B, Hq, Sq, D); k_desc / v_desc: [1, 1, 64, D] tiles of
    k, v (B, Hkv, Skv, D); lse_desc / delta_desc: [BM] tiles of lse, delta (B, Hq, row_pitch) fp32
    contiguous, flattened (1-D: a block's rows past Sq read the padding or the next head's, masked), with
    row_pitch >= Sq a multiple of 4 (TMA needs 16-byte aligned coordinates; an unaligned one is an illegal
    instruction); dk, dv (split, B, Hkv, Skv, D) with a unit last stride (slice s of the group's query heads
    writes dk + s * stride_dks; split 1 with zero slice strides writes the result). tiles = cdiv(Skv, 128) x
    B x Hkv x split; SCHEDULE and counter as in attention_fwd_ws (GRID: launch `tiles` programs, else at
    most that many). num_warps=4."""
    dtype: gl.constexpr = q_desc.dtype
    q_bufs = gl.allocate_shared_memory(dtype, [STAGES] + q_desc.block_type.shape, q_desc.layout)
    do_bufs = gl.allocate_shared_memory(dtype, [STAGES] + do_desc.block_type.shape, do_desc.layout)
    lse_bufs = gl.allocate_shared_memory(gl.float32, [STAGES] + lse_desc.block_type.shape, lse_desc.layout)
    delta_bufs = gl.allocate_shared_memory(gl.float32, [STAGES] + delta_desc.block_type.shape, delta_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2] + v_desc.block_type.shape, v_desc.layout)
    tile_ids = gl.allocate_shared_memory(gl.int32, [1, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    kv_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = mbarriers(STAGES, 1)
    empty = mbarriers(STAGES, 2)  # both consumers release a stage
    turn = mbarriers(2, 1)
    mbarrier.init(kv_ready, count=1)
    mbarrier.init(kv_empty, count=2)  # both consumers release K and V
    # Argument tuples written out in place: a constexpr kept in a tuple variable arrives as a tensor.
    gl.warp_specialize([
        (_consumer, (q_bufs, do_bufs, lse_bufs, delta_bufs, k_smem, v_smem, tile_ids, kv_ready, kv_empty, ready,
                     empty, turn, dk_ptr, dv_ptr, stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dvs,
                     stride_dvb, stride_dvh, stride_dvn, Hq, Hkv, Sq, Skv, sm_scale, chunk, split, tiles, CAUSAL,
                     STAGES, 0)),
        (_consumer, (q_bufs, do_bufs, lse_bufs, delta_bufs, k_smem, v_smem, tile_ids, kv_ready, kv_empty, ready,
                     empty, turn, dk_ptr, dv_ptr, stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dvs,
                     stride_dvb, stride_dvh, stride_dvn, Hq, Hkv, Sq, Skv, sm_scale, chunk, split, tiles, CAUSAL,
                     STAGES, 1)),
        (_producer, (q_desc, do_desc, k_desc, v_desc, lse_desc, delta_desc, q_bufs, do_bufs, lse_bufs, delta_bufs,
                     k_smem, v_smem, tile_ids, kv_ready, kv_empty, ready, empty, counter, Hq, Hkv, Sq, Skv,
                     row_pitch, chunk, split, tiles, STAGES, CAUSAL, SCHEDULE)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


@gluon.jit
def _dq_producer(q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_bufs, v_bufs, q_ready, k_ready, v_ready,
                 empty, Hq, Hkv, Sq, Skv, chunk, STAGES: gl.constexpr, CAUSAL: gl.constexpr):
    """One warp: the tile's Q and dO (both warpgroups' halves) once, then every K and V block of its key
    range into the ring."""
    BN: gl.constexpr = k_desc.block_type.shape[2]
    b64, hk64, h64, start_m = tile_of(gl.program_id(0), gl.num_programs(0), Hq, Hkv, Sq, chunk, 2 * WG_ROWS,
                                      CAUSAL)
    b, hk, h = b64.to(gl.int32), hk64.to(gl.int32), h64.to(gl.int32)
    n_blocks, _ = key_range(start_m, Skv, BN, CAUSAL)
    mbarrier.expect(q_ready, 2 * (q_desc.block_type.nbytes + do_desc.block_type.nbytes))
    for w in gl.static_range(2):
        tma.async_copy_global_to_shared(q_desc, [b, h, start_m + w * WG_ROWS, 0], q_ready, q_smem.index(w))
        tma.async_copy_global_to_shared(do_desc, [b, h, start_m + w * WG_ROWS, 0], q_ready, do_smem.index(w))
    for j in range(n_blocks):
        load_kv_block(k_desc, v_desc, k_bufs, v_bufs, k_ready, v_ready, empty, b, hk, j, j, STAGES)


@gluon.jit
def _dq_consumer(q_smem, do_smem, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty, turn, lse_ptr, delta_ptr,
                 dq_ptr, stride_dqb, stride_dqh, stride_dqm, Hq, Hkv, Sq, Skv, sm_scale, chunk,
                 CAUSAL: gl.constexpr, STAGES: gl.constexpr, WG: gl.constexpr):
    """Warpgroup WG: dQ of rows start_m + 64 WG ... + 63 over the tile's key blocks."""
    BN: gl.constexpr = k_bufs.type.shape[3]
    HEAD_D: gl.constexpr = k_bufs.type.shape[4]
    dtype: gl.constexpr = k_bufs.dtype
    s_layout: gl.constexpr = wgmma_layout(BN)
    acc_layout: gl.constexpr = wgmma_layout(HEAD_D)
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    b64, _, h64, start_m = tile_of(gl.program_id(0), gl.num_programs(0), Hq, Hkv, Sq, chunk, 2 * WG_ROWS, CAUSAL)
    n_blocks, hi_free = key_range(start_m, Skv, BN, CAUSAL)
    qk_scale = sm_scale * LOG2E
    rows = start_m + WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=gl.SliceLayout(1, s_layout))
    row0 = (b64 * Hq + h64) * Sq
    lse2 = gl.load(lse_ptr + row0 + rows, mask=rows < Sq, other=0.0) * LOG2E
    delta = gl.load(delta_ptr + row0 + rows, mask=rows < Sq, other=0.0)
    q = q_smem.index(WG).reshape([WG_ROWS, HEAD_D])
    do = do_smem.index(WG).reshape([WG_ROWS, HEAD_D])
    zero_s = gl.zeros([WG_ROWS, BN], gl.float32, s_layout)
    dq = gl.zeros([WG_ROWS, HEAD_D], gl.float32, acc_layout)
    mbarrier.wait(q_ready, 0)
    for j in range(n_blocks):
        s = j % STAGES
        k_t = k_bufs.index(s).reshape([BN, HEAD_D])
        v_t = v_bufs.index(s).reshape([BN, HEAD_D])
        mbarrier.wait(k_ready.index(s), (j // STAGES) & 1)
        wait_turn(turn, 3 * j, WG)
        s_ij = warpgroup_mma(q, k_t.permute((1, 0)), zero_s, use_acc=False, is_async=True)
        mbarrier.arrive(turn.index(1 - WG), count=1)
        s_ij = warpgroup_mma_wait(0, deps=(s_ij, ))
        p = gl.exp2(s_ij * qk_scale - gl.expand_dims(lse2, 1))
        if j * BN >= hi_free:  # the causal diagonal and the Skv tail (zero K rows would give exp2(-lse))
            cols = j * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
            valid = gl.expand_dims(cols < Skv, 0)
            if CAUSAL:
                valid = valid & (gl.expand_dims(cols, 0) <= gl.expand_dims(rows, 1))
            p = gl.where(valid, p, 0.0)

        mbarrier.wait(v_ready.index(s), (j // STAGES) & 1)
        wait_turn(turn, 3 * j + 1, WG)
        dp = warpgroup_mma(do, v_t.permute((1, 0)), zero_s, use_acc=False, is_async=True)
        mbarrier.arrive(turn.index(1 - WG), count=1)
        dp = warpgroup_mma_wait(0, deps=(dp, ))
        ds_a = gl.convert_layout((p * (dp - gl.expand_dims(delta, 1))).to(dtype), a_layout)

        wait_turn(turn, 3 * j + 2, WG)
        dq = warpgroup_mma(ds_a, k_t, dq, is_async=True)
        mbarrier.arrive(turn.index(1 - WG), count=1)
        dq = warpgroup_mma_wait(0, deps=(dq, ))
        mbarrier.arrive(empty.index(s), count=1)

    o_rows = gl.convert_layout(rows, gl.SliceLayout(1, acc_layout))
    cols_d = gl.arange(0, HEAD_D, layout=gl.SliceLayout(0, acc_layout))
    base = dq_ptr + b64 * stride_dqb + h64 * stride_dqh
    offs = gl.expand_dims(o_rows.to(gl.int64) * stride_dqm, 1) + gl.expand_dims(cols_d, 0)
    gl.store(base + offs, (dq * sm_scale).to(dtype), mask=gl.expand_dims(o_rows < Sq, 1))


@gluon.jit
def attention_bwd_dq_ws(q_desc, do_desc, k_desc, v_desc, lse_ptr, delta_ptr, dq_ptr, stride_dqb, stride_dqh,
                        stride_dqm, Hq, Hkv, Sq, Skv, sm_scale, chunk,
                        CAUSAL: gl.constexpr, STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                        PRODUCER_REGS: gl.constexpr):
    """dQ, EXPERIMENTAL and opt-in (not faster than the Triton kernel). A program owns 128 query rows of one
    (batch, query head) (two warpgroups of 64), keeps Q and dO in shared memory and streams K and V blocks: S = Q K^T,
    P = exp2(S * scale * log2 e - lse2), dP = dO V^T, dQ += P (dP - delta) K, three turns a block.
    q_desc / do_desc: [1, 1, 64, D] tiles; k_desc / v_desc: [1, 1, BN, D] tiles; lse, delta (B, Hq, Sq)
    fp32 contiguous; dq (B, Hq, Sq, D) with a unit last stride. Launch with num_warps=4 and
    cdiv(Sq, 128) x B x Hq programs; chunk as in attention_fwd."""
    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [2] + do_desc.block_type.shape, do_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = mbarriers(STAGES, 1)
    v_ready = mbarriers(STAGES, 1)
    empty = mbarriers(STAGES, 2)  # both consumers release a stage
    turn = mbarriers(2, 1)
    mbarrier.init(q_ready, count=1)
    # Argument tuples written out in place: a constexpr kept in a tuple variable arrives as a tensor.
    gl.warp_specialize([
        (_dq_consumer, (q_smem, do_smem, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty, turn, lse_ptr,
                        delta_ptr, dq_ptr, stride_dqb, stride_dqh, stride_dqm, Hq, Hkv, Sq, Skv, sm_scale, chunk,
                        CAUSAL, STAGES, 0)),
        (_dq_consumer, (q_smem, do_smem, k_bufs, v_bufs, q_ready, k_ready, v_ready, empty, turn, lse_ptr,
                        delta_ptr, dq_ptr, stride_dqb, stride_dqh, stride_dqm, Hq, Hkv, Sq, Skv, sm_scale, chunk,
                        CAUSAL, STAGES, 1)),
        (_dq_producer, (q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_bufs, v_bufs, q_ready, k_ready,
                        v_ready, empty, Hq, Hkv, Sq, Skv, chunk, STAGES, CAUSAL)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
