"""LayerNorm / RMSNorm forward over rows, with an optional input bias and residual, and the column sum.

h = x + input_bias + residual (each optional) is normalized over the last dim: LayerNorm subtracts
the mean, RMSNorm does not; then y = h_hat * weight + bias. Statistics are fp32.

`norm_fwd_rows` keeps BLOCK_M whole rows in registers and makes one pass; `norm_fwd_looped` streams
one wide row in chunks: a stats pass (Chan's merge of per-chunk mean and M2, stable where sum and
sum of squares would cancel; or, with ACC_LANES, a Welford summary per lane merged once after the
loop, as Inductor's looped reductions do), then an output pass in reverse chunk order so the most
recently read chunks are still in L2. `colsum` is the deterministic second stage of the backward's
dweight/dbias reduction (the first stage is in norm_bwd.py).

With a residual (HAS_RES) h is rounded to x's dtype and stored: it is the new residual stream, and
y is the norm of exactly that stored h, which the backward reads back.
"""
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait


@triton.jit
def row_mean(total, n):
    """total / n rounded as IEEE does: Triton's `/` is div.full.f32 (up to 2 ulp off), so x / 1 need
    not be x and an N = 1 row would not give the exact zero gradient torch gives."""
    return tl.math.div_rn(total, tl.cast(n, tl.float32))


@triton.jit
def _normalize_store(h, rows, row_ok, cols, col_ok, mask, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, N, inv_n, eps,
                     w_early, b_early,
                     IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, EARLY: tl.constexpr,
                     STORE_STATS: tl.constexpr):
    """Rows of fp32 h (masked elements 0) -> y = h_hat * weight + bias stored, and with STORE_STATS the
    mean (LayerNorm) and rstd the backward reads.

    Weight and bias are read after the reductions, so they hold no registers while h and the reductions'
    temporaries do: loading them before x (as Liger does) cost LN 8192x8192 27% (H200, 2.73 vs 3.72 TB/s).
    EARLY: they were read with x (w_early, b_early, fp32) and are used from registers; see ops.norm_configs.
    inv_n: 1 / N rounded once per program (row_mean's correctly rounded division per row costs a slow-path
    branch each); 1 / 1 is exact, so an N = 1 row still normalizes to exactly 0."""
    if IS_RMS:
        rstd = tl.math.rsqrt(tl.sum(h * h, axis=1) * inv_n + eps)
        y = h * rstd[:, None]
    else:
        mean = tl.sum(h, axis=1) * inv_n
        d = tl.where(mask, h - mean[:, None], 0.0)
        rstd = tl.math.rsqrt(tl.sum(d * d, axis=1) * inv_n + eps)
        y = d * rstd[:, None]
        if STORE_STATS:
            tl.store(mean_ptr + rows, mean, mask=row_ok)
    if STORE_STATS:
        tl.store(rstd_ptr + rows, rstd, mask=row_ok)
    if HAS_W:
        if EARLY:
            y *= w_early
        else:
            y *= tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        if EARLY:
            y += b_early
        else:
            y += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def norm_fwd_rows(
    x_ptr, ib_ptr, res_ptr, w_ptr, b_ptr, y_ptr, h_ptr, mean_ptr, rstd_ptr,
    M, N, stride_xm, stride_xn, stride_rm, stride_rn, eps,
    IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_IB: tl.constexpr,
    HAS_RES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EARLY_PARAMS: tl.constexpr,
    STORE_STATS: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr,
):
    """STORE_STATS off (inference: nothing will run the backward): mean and rstd are not written.
    EVEN_M: M is a multiple of BLOCK_M; EVEN_N: N == BLOCK_N. Their masks fold away (no predicates)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = tl.full([BLOCK_M], True, tl.int1) if EVEN_M else rows < M
    col_ok = tl.full([BLOCK_N], True, tl.int1) if EVEN_N else cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    rows = rows.to(tl.int64)
    # Inductor passes Python floats as fp64: keep the arithmetic in fp32.
    eps = tl.cast(eps, tl.float32)
    # [1, BLOCK_N], in the tile's layout as the late read's broadcast is.
    w_early = tl.zeros([1, BLOCK_N], tl.float32)
    b_early = tl.zeros([1, BLOCK_N], tl.float32)
    if EARLY_PARAMS:  # issued before x, so their latency overlaps x's (ops.norm_configs.FWD_EARLY_PARAMS)
        if HAS_W:
            w_early = tl.load(w_ptr + cols[None, :], mask=col_ok[None, :], other=0.0).to(tl.float32)
        if HAS_B:
            b_early = tl.load(b_ptr + cols[None, :], mask=col_ok[None, :], other=0.0).to(tl.float32)
    h = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :] * stride_xn, mask=mask,
                other=0.0).to(tl.float32)
    if HAS_IB:
        h += tl.load(ib_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_RES:
        h += tl.load(res_ptr + rows[:, None] * stride_rm + cols[None, :] * stride_rn, mask=mask,
                     other=0.0).to(tl.float32)
        h = h.to(h_ptr.dtype.element_ty)
        tl.store(h_ptr + rows[:, None] * N + cols[None, :], h, mask=mask)
        h = h.to(tl.float32)
    inv_n = tl.math.div_rn(1.0, tl.cast(N, tl.float32))
    _normalize_store(h, rows, row_ok, cols, col_ok, mask, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, N, inv_n, eps,
                     w_early, b_early, IS_RMS, HAS_W, HAS_B, EARLY_PARAMS, STORE_STATS)


@triton.jit
def _load_h_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn,
                  HAS_IB: tl.constexpr, HAS_RES: tl.constexpr, FROM_H: tl.constexpr, POLICY: tl.constexpr):
    """One chunk of h in fp32: read back from h_row (FROM_H) or summed from x, input_bias, residual.
    POLICY: the L2 eviction policy of the row's reads ("" for the default)."""
    if FROM_H:
        h = tl.load(h_row + cols, mask=mask, other=0.0, eviction_policy=POLICY).to(tl.float32)
    else:
        h = tl.load(x_row + cols * stride_xn, mask=mask, other=0.0, eviction_policy=POLICY).to(tl.float32)
        if HAS_IB:
            h += tl.load(ib_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            h += tl.load(res_row + cols * stride_rn, mask=mask, other=0.0, eviction_policy=POLICY).to(tl.float32)
    return h


@triton.jit
def _first_read_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn,
                      HAS_IB: tl.constexpr, HAS_RES: tl.constexpr, POLICY: tl.constexpr):
    """The stats pass's chunk of h in fp32; with a residual, rounded to its dtype and stored (the new
    residual stream, which the output pass reads back)."""
    h = _load_h_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn, HAS_IB, HAS_RES, False,
                      POLICY)
    if HAS_RES:
        h = h.to(h_row.dtype.element_ty)
        tl.store(h_row + cols, h, mask=mask)
        h = h.to(tl.float32)
    return h


@triton.jit
def _welford_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Chan's merge of two (mean, sum of squared deviations, count) summaries."""
    n = n_a + n_b
    frac = tl.where(n == 0.0, 0.0, n_b / tl.maximum(n, 1.0))
    delta = mean_b - mean_a
    return mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac, n


@triton.jit
def _lane_stats_chunk(x_row, ib_ptr, res_row, h_row, start, N, lane_n, lane_mean, lane_m2, stride_xn, stride_rn,
                      IS_RMS: tl.constexpr, HAS_IB: tl.constexpr, HAS_RES: tl.constexpr, BLOCK_N: tl.constexpr,
                      EVEN_N: tl.constexpr, POLICY: tl.constexpr, COUNT: tl.constexpr):
    """One chunk of h (stored with a residual) folded into per-lane statistics: RMSNorm the sum of squares
    (lane_m2), LayerNorm a Welford summary (count, mean, sum of squared deviations) per lane.
    COUNT > 0: this is chunk COUNT of an unrolled row without masks, so every lane's count is COUNT."""
    cols = start + tl.arange(0, BLOCK_N)
    mask = tl.full([BLOCK_N], True, tl.int1) if EVEN_N else cols < N
    h = _first_read_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn, HAS_IB, HAS_RES, POLICY)
    if IS_RMS:
        lane_m2 += h * h
    elif COUNT == 1:
        lane_n, lane_mean = tl.full([BLOCK_N], 1.0, tl.float32), h
    elif COUNT > 1:
        lane_n = tl.full([BLOCK_N], COUNT, tl.float32)
        delta = h - lane_mean
        lane_mean += delta * (1.0 / COUNT)
        lane_m2 += delta * (h - lane_mean)
    else:
        lane_n += mask.to(tl.float32)
        delta = tl.where(mask, h - lane_mean, 0.0)
        lane_mean += delta / tl.maximum(lane_n, 1.0)
        lane_m2 += delta * tl.where(mask, h - lane_mean, 0.0)
    return lane_n, lane_mean, lane_m2


@triton.jit
def _output_chunk(x_row, ib_ptr, res_row, h_row, w_ptr, b_ptr, y_row, start, N, mean, rstd, stride_xn, stride_rn,
                  IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_IB: tl.constexpr,
                  HAS_RES: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr, POLICY: tl.constexpr):
    """y for one chunk, h read again (h itself with a residual, else x and input_bias)."""
    cols = start + tl.arange(0, BLOCK_N)
    mask = tl.full([BLOCK_N], True, tl.int1) if EVEN_N else cols < N
    h = _load_h_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn, HAS_IB, HAS_RES, HAS_RES,
                      POLICY)
    y = h * rstd if IS_RMS else (h - mean) * rstd
    if HAS_W:
        y *= tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        y += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_row + cols, y.to(y_row.dtype.element_ty), mask=mask)


@triton.jit
def norm_fwd_looped(
    x_ptr, ib_ptr, res_ptr, w_ptr, b_ptr, y_ptr, h_ptr, mean_ptr, rstd_ptr,
    N, stride_xm, stride_xn, stride_rm, stride_rn, eps,
    IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_IB: tl.constexpr,
    HAS_RES: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr, STORE_STATS: tl.constexpr,
    ACC_LANES: tl.constexpr, CHUNKS: tl.constexpr, EVEN_N: tl.constexpr, L2_HINTS: tl.constexpr,
):
    """One row a program, BLOCK_N-element chunks. STAGES: both chunk loops' loads pipelined through shared
    memory, this deep (1: not). STORE_STATS as for norm_fwd_rows.
    ACC_LANES: the statistics summed per lane across chunks and reduced once after the loop (as Inductor's
    looped reductions do), not reduced across warps per chunk; then CHUNKS > 0 (= cdiv(N, BLOCK_N)) unrolls
    both loops, so every chunk's loads are issued together, and EVEN_N (N == CHUNKS * BLOCK_N) drops
    the masks. L2_HINTS: reads that are read again marked evict-last, the last reads evict-first."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    res_row = res_ptr + row * stride_rm
    h_row = h_ptr + row * N
    y_row = y_ptr + row * N
    eps = tl.cast(eps, tl.float32)
    # With a residual the second pass reads h back, so x and the residual are read once.
    first_policy: tl.constexpr = ("evict_first" if HAS_RES else "evict_last") if L2_HINTS else ""
    last_policy: tl.constexpr = "evict_first" if L2_HINTS else ""
    if ACC_LANES:
        lane_n = tl.zeros([BLOCK_N], tl.float32)
        lane_mean = tl.zeros([BLOCK_N], tl.float32)
        lane_m2 = tl.zeros([BLOCK_N], tl.float32)
        if CHUNKS > 0:
            for c in tl.static_range(CHUNKS):
                lane_n, lane_mean, lane_m2 = _lane_stats_chunk(
                    x_row, ib_ptr, res_row, h_row, c * BLOCK_N, N, lane_n, lane_mean, lane_m2, stride_xn, stride_rn,
                    IS_RMS, HAS_IB, HAS_RES, BLOCK_N, EVEN_N, first_policy, c + 1 if EVEN_N else 0)
        else:
            for start in tl.range(0, N, BLOCK_N, num_stages=STAGES):
                lane_n, lane_mean, lane_m2 = _lane_stats_chunk(
                    x_row, ib_ptr, res_row, h_row, start, N, lane_n, lane_mean, lane_m2, stride_xn, stride_rn,
                    IS_RMS, HAS_IB, HAS_RES, BLOCK_N, False, first_policy, 0)
        if IS_RMS:
            m2 = tl.sum(lane_m2, axis=0)
            mean = 0.0
        else:
            mean, m2, _ = tl.reduce((lane_mean, lane_m2, lane_n), 0, _welford_combine)
    else:
        count = tl.full([], 0.0, tl.float32)
        mean = tl.full([], 0.0, tl.float32)
        m2 = tl.full([], 0.0, tl.float32)  # RMSNorm: the sum of squares; LayerNorm: the sum of squared deviations (Chan's M2)
        for start in tl.range(0, N, BLOCK_N, num_stages=STAGES):
            cols = start + tl.arange(0, BLOCK_N)
            mask = cols < N
            h = _first_read_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn,
                                  HAS_IB, HAS_RES, first_policy)
            if IS_RMS:
                m2 += tl.sum(h * h, axis=0)
            else:
                n_b = tl.minimum(N - start, BLOCK_N).to(tl.float32)
                mean_b = tl.sum(h, axis=0) / n_b
                d = tl.where(mask, h - mean_b, 0.0)
                total = count + n_b
                delta = mean_b - mean
                mean += delta * (n_b / total)
                m2 += tl.sum(d * d, axis=0) + delta * delta * (count * n_b / total)
                count = total
    rstd = tl.math.rsqrt(row_mean(m2, N) + eps)
    if STORE_STATS:
        if not IS_RMS:
            tl.store(mean_ptr + row, mean)
        tl.store(rstd_ptr + row, rstd)
    # The second pass runs last chunk first: the most recently read chunks are the likeliest still in L2
    # (unrolled, the order made no difference: scripts/ab_norm.py, H100, rms / LN 8192^2 bf16).
    if ACC_LANES and CHUNKS > 0:
        for c in tl.static_range(CHUNKS):
            _output_chunk(x_row, ib_ptr, res_row, h_row, w_ptr, b_ptr, y_row, (CHUNKS - 1 - c) * BLOCK_N, N, mean,
                          rstd, stride_xn, stride_rn, IS_RMS, HAS_W, HAS_B, HAS_IB, HAS_RES, BLOCK_N, EVEN_N,
                          last_policy)
    else:
        n_chunks = tl.cdiv(N, BLOCK_N)
        for i in tl.range(n_chunks, num_stages=STAGES):
            _output_chunk(x_row, ib_ptr, res_row, h_row, w_ptr, b_ptr, y_row, (n_chunks - 1 - i) * BLOCK_N, N, mean,
                          rstd, stride_xn, stride_rn, IS_RMS, HAS_W, HAS_B, HAS_IB, HAS_RES, BLOCK_N, False,
                          last_policy)


@triton.jit
def colsum(part0_ptr, part1_ptr, part2_ptr, out0_ptr, out1_ptr, out2_ptr, P, N,
           K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, WAIT_PRIMARY: tl.constexpr):
    """out_k[c] = sum over p of part_k[p, c], always in the same order (deterministic).

    Grid (column blocks, K): program_id(1) picks the partial buffer k < K and its output, whose dtype
    (the weight's, bias's or input bias's) the store casts to. Slots k >= K are compiled out, so the
    caller may pass any tensor there. The buffers in use are separate tensors, never views of one
    another: torch.compile copies each mutated kernel argument, and aliased ones would overwrite each
    other's results.
    WAIT_PRIMARY: launched as a programmatic dependent of the kernel that writes the partials, the
    programs may start before it ends; griddepcontrol.wait holds them until its writes are visible.
    """
    if WAIT_PRIMARY:
        gdc_wait()
    k = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < N
    base = part0_ptr
    if K > 1:  # noqa: SIM102 - the constexpr test compiles the slot out; the runtime one picks it
        if k == 1:
            base = part1_ptr
    if K > 2:  # noqa: SIM102
        if k == 2:
            base = part2_ptr
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for start in range(0, P, BLOCK_P):
        ps = start + tl.arange(0, BLOCK_P)
        m = (ps[:, None] < P) & col_ok[None, :]
        acc += tl.load(base + ps[:, None].to(tl.int64) * N + cols[None, :], mask=m, other=0.0)
    s = tl.sum(acc, axis=0)
    if k == 0:
        tl.store(out0_ptr + cols, s.to(out0_ptr.dtype.element_ty), mask=col_ok)
    if K > 1:  # noqa: SIM102
        if k == 1:
            tl.store(out1_ptr + cols, s.to(out1_ptr.dtype.element_ty), mask=col_ok)
    if K > 2:  # noqa: SIM102
        if k == 2:
            tl.store(out2_ptr + cols, s.to(out2_ptr.dtype.element_ty), mask=col_ok)
