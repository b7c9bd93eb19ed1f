"""Flash attention forward: online softmax over key blocks, O(S) extra memory (one LSE per row).

Layout: q (B, Hq, Sq, D), k and v (B, Hkv, Skv, D), any strides (all four passed). Query head h reads
KV head h // G with G = Hq // Hkv. Causal alignment is top-left, as in SDPA's math backend
(`ones(Sq, Skv).tril()`): query i sees key j iff j <= i.

The key range of one query block splits in two stages:
- full blocks needing no score mask (every key visible to every row of the block and in bounds): no
  `where`, no load masks on rows;
- the rest (the causal diagonal and the ragged Skv tail): causal and bounds masks applied.
Scores are kept in the log2 domain: s2 = (q . k) * scale * log2(e), so exp2 replaces exp.
The stored LSE is natural-log: lse = log(sum_j exp(scale * q . k_j)).
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _fwd_range(
    acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, offs_m, Skv, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_D: tl.constexpr, PREC: tl.constexpr, NUM_STAGES: tl.constexpr, FOLD_SCALE: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_D
    lo64 = tl.cast(lo, tl.int64)
    kT_ptrs = k_base + lo64 * stride_kn + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = v_base + lo64 * stride_vn + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        cols = start_n + offs_n
        if MASKED:
            kT = tl.load(kT_ptrs, mask=(cols[None, :] < Skv) & d_ok[:, None], other=0.0)
        elif BLOCK_D == HEAD_D:
            kT = tl.load(kT_ptrs)
        else:
            kT = tl.load(kT_ptrs, mask=d_ok[:, None], other=0.0)
        s = tl.dot(q, kT, input_precision=PREC)
        if not FOLD_SCALE:
            s = s * qk_scale
        if MASKED:
            valid = cols[None, :] < Skv
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            s = tl.where(valid, s, -float("inf"))
        if FOLD_SCALE:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASKED:
            # A row with nothing visible yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not nan.
            m_sub = tl.where(m_new == -float("inf"), 0.0, m_new)
        else:
            m_sub = m_new
        if FOLD_SCALE:
            # max(s * c) = max(s) * c for c > 0, so the scale folds into exp2's argument: one FFMA an
            # element instead of a multiply and a subtract (the softmax step is issue-bound).
            p = tl.exp2(s * qk_scale - m_sub[:, None])
        else:
            p = tl.exp2(s - m_sub[:, None])
        alpha = tl.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(v_ptrs, mask=(cols[:, None] < Skv) & d_ok[None, :], other=0.0)
        elif BLOCK_D == HEAD_D:
            v = tl.load(v_ptrs)
        else:
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PREC)
        m_i = m_new
        kT_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return acc, l_i, m_i


@triton.jit
def longest_first(rest, units, chunk, num_blocks, CAUSAL: tl.constexpr):
    """(rank, unit) of program `rest` in a grid of units x num_blocks programs; with causal, rank 0 is a
    unit's longest block.

    Non-causal: one unit after another, its blocks side by side (they share the unit's K/V, or Q/dO,
    through L2). Causal: units in chunks of `chunk`; within a chunk, every unit's rank-0 block, then every
    unit's rank-1 block, and so on. The chunk's longest programs start first and the grid ends on short
    ones (a longest-first schedule: unit after unit, the last unit's longest programs started near the
    end and left a tail), while programs running side by side still come from `chunk` units whose streams
    fit in L2 together."""
    if CAUSAL:
        first = (rest // (chunk * num_blocks)) * chunk
        size = tl.minimum(units - first, chunk)
        r = rest - first * num_blocks
        rank = r // size
        unit = first + r % size
    else:
        rank = rest % num_blocks
        unit = rest // num_blocks
    return rank, unit


@triton.jit
def query_block(Hq, Hkv, Sq, chunk, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """This program's (batch, KV head, query head) as int64 and its first query row (tile_of with one
    program a tile)."""
    return tile_of(tl.program_id(0), tl.num_programs(0), Hq, Hkv, Sq, chunk, BLOCK_M, CAUSAL)


@triton.jit
def tile_of(tile, tiles, Hq, Hkv, Sq, chunk, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """(batch, KV head, query head) as int64 and the first query row of query block `tile` of `tiles`.

    The G query heads of one KV group are side by side (they read the same K/V tiles); above them,
    `longest_first` orders query blocks and (batch, KV head) units. With causal the last query block
    of a unit is its longest."""
    G = Hq // Hkv
    num_m = tl.cdiv(Sq, BLOCK_M)
    g = tile % G
    rank, bk = longest_first(tile // G, tiles // (G * num_m), chunk, num_m, CAUSAL)
    if CAUSAL:
        mb = num_m - 1 - rank
    else:
        mb = rank
    hk64 = (bk % Hkv).to(tl.int64)
    return (bk // Hkv).to(tl.int64), hk64, hk64 * G + g, mb * BLOCK_M


@triton.jit
def attention_fwd(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    Hq, Hkv, Sq, Skv, sm_scale, chunk,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_D: tl.constexpr, PREC: tl.constexpr, NUM_STAGES: tl.constexpr, FOLD_SCALE: tl.constexpr,
):
    """chunk: (batch, KV head) units per longest-first chunk under causal (see longest_first).
    FOLD_SCALE (only with sm_scale > 0): the scale folds into exp2's argument; otherwise it multiplies the
    scores first."""
    b64, hk64, h64, start_m = query_block(Hq, Hkv, Sq, chunk, BLOCK_M, CAUSAL)
    qk_scale = tl.cast(sm_scale, tl.float32) * LOG2E

    q_base = Q + b64 * stride_qb + h64 * stride_qh
    k_base = K + b64 * stride_kb + hk64 * stride_kh
    v_base = V + b64 * stride_vb + hk64 * stride_vh
    o_base = O + b64 * stride_ob + h64 * stride_oh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Sq
    d_ok = offs_d < HEAD_D
    offs_m64 = offs_m.to(tl.int64)
    q = tl.load(q_base + offs_m64[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    full_n = (Skv // BLOCK_N) * BLOCK_N
    if CAUSAL:
        # Keys below the block's first row are visible to all its rows; the diagonal needs the mask.
        hi_free = tl.minimum((start_m // BLOCK_N) * BLOCK_N, full_n)
        hi = tl.minimum(start_m + BLOCK_M, Skv)
    else:
        hi_free = full_n
        hi = Skv
    acc, l_i, m_i = _fwd_range(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                               0, hi_free, offs_m, Skv, qk_scale, False, CAUSAL, BLOCK_N, BLOCK_D, HEAD_D,
                               PREC, NUM_STAGES, FOLD_SCALE)
    acc, l_i, m_i = _fwd_range(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                               hi_free, hi, offs_m, Skv, qk_scale, True, CAUSAL, BLOCK_N, BLOCK_D, HEAD_D,
                               PREC, NUM_STAGES, FOLD_SCALE)

    # Top-left causal alignment leaves every row at least key 0, so l_i > 0 for every real row.
    out = acc / l_i[:, None]
    tl.store(o_base + offs_m64[:, None] * stride_om + offs_d[None, :] * stride_od, out.to(O.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    lse = (m_i + tl.log2(l_i)) * LN2
    row0 = (b64 * Hq + h64) * Sq
    tl.store(LSE + row0 + offs_m, lse, mask=row_ok)
