"""Flash attention backward (FA2 split): delta preprocess, dK/dV per KV block, dQ per query block.

With s = scale * q . k, p = exp(s - lse), dp = dO . v, ds = p * (dp - delta), delta = rowsum(dO * O):
dV = p^T dO, dK = scale * ds^T q, dQ = scale * ds k. The probabilities are recomputed from the LSE the
forward kept, so nothing of size S x S is ever stored.

Determinism: one dK/dV program owns one key block of one KV head and loops, in a fixed order, over the
G query heads of its GQA group (or over one of `split` equal slices of them, each slice's dK/dV then an
fp32 partial that the launcher sums in a fixed order) and over query blocks: no atomics. dQ has its own
kernel looping over key blocks. Causal alignment is top-left (query i sees key j iff j <= i), as in the
forward.
"""
import triton
import triton.language as tl

from .attention_fwd import longest_first, query_block

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def attention_bwd_delta(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_db, stride_dh, stride_dm, stride_dd,
    Hq, Sq,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = (bh % Hq).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < Sq) & (cols[None, :] < HEAD_D)
    rows64 = rows.to(tl.int64)
    o = tl.load(O + b * stride_ob + h * stride_oh + rows64[:, None] * stride_om + cols[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_db + h * stride_dh + rows64[:, None] * stride_dm + cols[None, :] * stride_dd,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + bh.to(tl.int64) * Sq + rows, tl.sum(o * do, axis=1), mask=rows < Sq)


@triton.jit
def _dkdv_range(
    dk, dv, k, v, q_base, do_base, lse_row, delta_row,
    stride_qm, stride_qd, stride_dom, stride_dod,
    lo, hi, offs_n, Sq, Skv, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_D: tl.constexpr, PREC: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_D
    lo64 = tl.cast(lo, tl.int64)
    qT_ptrs = q_base + lo64 * stride_qm + offs_m[None, :] * stride_qm + offs_d[:, None] * stride_qd
    do_ptrs = do_base + lo64 * stride_dom + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod
    for start_m in tl.range(lo, hi, BLOCK_M, num_stages=NUM_STAGES):
        rows = start_m + offs_m
        if MASKED:
            row_ok = rows < Sq
            qT = tl.load(qT_ptrs, mask=row_ok[None, :] & d_ok[:, None], other=0.0)
            lse = tl.load(lse_row + rows, mask=row_ok, other=0.0)
        elif BLOCK_D == HEAD_D:
            qT = tl.load(qT_ptrs)
            lse = tl.load(lse_row + rows)
        else:
            qT = tl.load(qT_ptrs, mask=d_ok[:, None], other=0.0)
            lse = tl.load(lse_row + rows)
        pT = tl.exp2(tl.dot(k, qT, input_precision=PREC) * qk_scale - (lse * LOG2E)[None, :])
        if MASKED:
            valid = (rows[None, :] < Sq) & (offs_n[:, None] < Skv)
            if CAUSAL:
                valid = valid & (offs_n[:, None] <= rows[None, :])
            pT = tl.where(valid, pT, 0.0)
            do = tl.load(do_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            delta = tl.load(delta_row + rows, mask=row_ok, other=0.0)
        elif BLOCK_D == HEAD_D:
            do = tl.load(do_ptrs)
            delta = tl.load(delta_row + rows)
        else:
            do = tl.load(do_ptrs, mask=d_ok[None, :], other=0.0)
            delta = tl.load(delta_row + rows)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PREC)
        dpT = tl.dot(v, tl.trans(do), input_precision=PREC)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=PREC)
        qT_ptrs += BLOCK_M * stride_qm
        do_ptrs += BLOCK_M * stride_dom
    return dk, dv


@triton.jit
def attention_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dks, stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvs, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    Hq, Hkv, Sq, Skv, sm_scale, chunk, split,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_D: tl.constexpr, PREC: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    """split: programs per key block and KV head, each over G // split of the group's query heads; slice s
    writes DK / DV at s * stride_dks / stride_dvs (partials; 0 strides and split 1 write the result)."""
    # Key blocks of one (batch, KV head, head slice) side by side: they share the Q/dO stream through L2.
    # With causal, low key blocks have the most query rows: longest_first starts them first over `chunk`
    # units.
    G = Hq // Hkv
    heads = G // split
    num_n = tl.cdiv(Skv, BLOCK_N)
    nb, unit = longest_first(tl.program_id(0), tl.num_programs(0) // num_n, chunk, num_n, CAUSAL)
    bk = unit // split
    part = unit % split
    b64 = (bk // Hkv).to(tl.int64)
    hk = bk % Hkv
    start_n = nb * BLOCK_N
    sm_scale = tl.cast(sm_scale, tl.float32)
    qk_scale = sm_scale * LOG2E

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < Skv) & (offs_d[None, :] < HEAD_D)
    offs_n64 = offs_n.to(tl.int64)
    k = tl.load(K + b64 * stride_kb + hk.to(tl.int64) * stride_kh + offs_n64[:, None] * stride_kn
                + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
    v = tl.load(V + b64 * stride_vb + hk.to(tl.int64) * stride_vh + offs_n64[:, None] * stride_vn
                + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    full_m = (Sq // BLOCK_M) * BLOCK_M
    all_m = tl.cdiv(Sq, BLOCK_M) * BLOCK_M
    if CAUSAL:
        # Rows below start_n see none of these keys; rows past the block's last key see all of them.
        lo = (start_n // BLOCK_M) * BLOCK_M
        diag_end = tl.minimum(tl.cdiv(start_n + BLOCK_N, BLOCK_M) * BLOCK_M, all_m)
    else:
        lo = 0
        diag_end = 0
    tail_lo = tl.maximum(diag_end, full_m)
    for g in range(part * heads, part * heads + heads):
        h64 = (hk * G + g).to(tl.int64)
        q_base = Q + b64 * stride_qb + h64 * stride_qh
        do_base = DO + b64 * stride_dob + h64 * stride_doh
        row0 = (b64 * Hq + h64) * Sq
        lse_row = LSE + row0
        delta_row = DELTA + row0
        dk, dv = _dkdv_range(dk, dv, k, v, q_base, do_base, lse_row, delta_row,
                             stride_qm, stride_qd, stride_dom, stride_dod, lo, diag_end, offs_n, Sq, Skv,
                             qk_scale, True, CAUSAL, BLOCK_M, BLOCK_D, HEAD_D, PREC, NUM_STAGES)
        dk, dv = _dkdv_range(dk, dv, k, v, q_base, do_base, lse_row, delta_row,
                             stride_qm, stride_qd, stride_dom, stride_dod, diag_end, full_m, offs_n, Sq, Skv,
                             qk_scale, False, CAUSAL, BLOCK_M, BLOCK_D, HEAD_D, PREC, NUM_STAGES)
        dk, dv = _dkdv_range(dk, dv, k, v, q_base, do_base, lse_row, delta_row,
                             stride_qm, stride_qd, stride_dom, stride_dod, tail_lo, all_m, offs_n, Sq, Skv,
                             qk_scale, True, CAUSAL, BLOCK_M, BLOCK_D, HEAD_D, PREC, NUM_STAGES)

    dk = dk * sm_scale
    part64 = part.to(tl.int64)
    tl.store(DK + part64 * stride_dks + b64 * stride_dkb + hk.to(tl.int64) * stride_dkh
             + offs_n64[:, None] * stride_dkn + offs_d[None, :] * stride_dkd, dk.to(DK.dtype.element_ty),
             mask=kv_mask)
    tl.store(DV + part64 * stride_dvs + b64 * stride_dvb + hk.to(tl.int64) * stride_dvh
             + offs_n64[:, None] * stride_dvn + offs_d[None, :] * stride_dvd, dv.to(DV.dtype.element_ty),
             mask=kv_mask)


@triton.jit
def _dq_range(
    dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, offs_m, Skv, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_D: tl.constexpr, PREC: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_D
    lo64 = tl.cast(lo, tl.int64)
    kT_ptrs = k_base + lo64 * stride_kn + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    vT_ptrs = v_base + lo64 * stride_vn + offs_n[None, :] * stride_vn + offs_d[:, None] * stride_vd
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        cols = start_n + offs_n
        if MASKED:
            kv_mask = (cols[None, :] < Skv) & d_ok[:, None]
            kT = tl.load(kT_ptrs, mask=kv_mask, other=0.0)
            vT = tl.load(vT_ptrs, mask=kv_mask, other=0.0)
        elif BLOCK_D == HEAD_D:
            kT = tl.load(kT_ptrs)
            vT = tl.load(vT_ptrs)
        else:
            kT = tl.load(kT_ptrs, mask=d_ok[:, None], other=0.0)
            vT = tl.load(vT_ptrs, mask=d_ok[:, None], other=0.0)
        p = tl.exp2(tl.dot(q, kT, input_precision=PREC) * qk_scale - lse2[:, None])
        if MASKED:
            valid = cols[None, :] < Skv
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            p = tl.where(valid, p, 0.0)
        dp = tl.dot(do, vT, input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision=PREC)
        kT_ptrs += BLOCK_N * stride_kn
        vT_ptrs += BLOCK_N * stride_vn
    return dq


@triton.jit
def attention_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    Hq, Hkv, Sq, Skv, sm_scale, chunk,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_D: tl.constexpr, PREC: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    # Same program order as the forward: a KV group's query heads side by side share K/V through L2.
    b64, hk64, h64, start_m = query_block(Hq, Hkv, Sq, chunk, BLOCK_M, CAUSAL)
    sm_scale = tl.cast(sm_scale, tl.float32)
    qk_scale = sm_scale * LOG2E

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Sq
    mask = row_ok[:, None] & (offs_d[None, :] < HEAD_D)
    offs_m64 = offs_m.to(tl.int64)
    q = tl.load(Q + b64 * stride_qb + h64 * stride_qh + offs_m64[:, None] * stride_qm
                + offs_d[None, :] * stride_qd, mask=mask, other=0.0)
    do = tl.load(DO + b64 * stride_dob + h64 * stride_doh + offs_m64[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    row0 = (b64 * Hq + h64) * Sq
    lse2 = tl.load(LSE + row0 + offs_m, mask=row_ok, other=0.0) * LOG2E
    delta = tl.load(DELTA + row0 + offs_m, mask=row_ok, other=0.0)
    k_base = K + b64 * stride_kb + hk64 * stride_kh
    v_base = V + b64 * stride_vb + hk64 * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    full_n = (Skv // BLOCK_N) * BLOCK_N
    if CAUSAL:
        hi_free = tl.minimum((start_m // BLOCK_N) * BLOCK_N, full_n)
        hi = tl.minimum(start_m + BLOCK_M, Skv)
    else:
        hi_free = full_n
        hi = Skv
    dq = _dq_range(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                   0, hi_free, offs_m, Skv, qk_scale, False, CAUSAL, BLOCK_N, BLOCK_D, HEAD_D, PREC, NUM_STAGES)
    dq = _dq_range(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                   hi_free, hi, offs_m, Skv, qk_scale, True, CAUSAL, BLOCK_N, BLOCK_D, HEAD_D, PREC, NUM_STAGES)
    dq = dq * sm_scale
    tl.store(DQ + b64 * stride_dqb + h64 * stride_dqh + offs_m64[:, None] * stride_dqm
             + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=mask)


@triton.jit
def _sum_slices(P, OUT, part_stride, split, rows, stride_b, stride_h, stride_n, stride_d, Hkv, Skv,
                HEAD_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    mask = (r[:, None] < rows) & (d[None, :] < HEAD_D)
    r64 = r.to(tl.int64)
    src = P + r64[:, None] * HEAD_D + d[None, :]
    acc = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    for s in range(split):  # slice after slice, always in this order: deterministic
        acc += tl.load(src + s * part_stride, mask=mask, other=0.0)
    b, h, n = r64 // (Hkv * Skv), (r64 // Skv) % Hkv, r64 % Skv
    dst = OUT + (b * stride_b + h * stride_h + n * stride_n)[:, None] + d[None, :] * stride_d
    tl.store(dst, acc.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def attention_bwd_split_sum(
    DK_P, DV_P, DK, DV, part_stride, split, rows,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    Hkv, Skv,
    HEAD_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dK and dV from the head-split dK/dV kernels' fp32 partials DK_P / DV_P (split, B, Hkv, Skv, D),
    contiguous: each element the sum of its `split` slices in a fixed order, cast to DK / DV (any strides).
    Grid: (cdiv(B * Hkv * Skv, BLOCK_R), 2), axis 1 picking dK or dV. One pass in place of a reduction and
    a copy for each."""
    if tl.program_id(1) == 0:
        _sum_slices(DK_P, DK, part_stride, split, rows, stride_dkb, stride_dkh, stride_dkn, stride_dkd, Hkv, Skv,
                    HEAD_D, BLOCK_R, BLOCK_D)
    else:
        _sum_slices(DV_P, DV, part_stride, split, rows, stride_dvb, stride_dvh, stride_dvn, stride_dvd, Hkv, Skv,
                    HEAD_D, BLOCK_R, BLOCK_D)
