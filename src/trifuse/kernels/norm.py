"""LayerNorm / RMSNorm forward over rows, with an optional input bias and residual, and the column sum.

h = x + input_bias + residual (each optional) is normalized over the last dim: LayerNorm subtracts
the mean, RMSNorm does not; then y = h_hat * weight + bias. Statistics are fp32.

`norm_fwd_rows` keeps BLOCK_M whole rows in registers and makes one pass; `norm_fwd_looped` streams
one wide row in chunks: a stats pass (Chan's merge of per-chunk mean and M2, stable where sum and
sum of squares would cancel), then an output pass in reverse chunk order so the most recently read
chunks are still in L2. `colsum` is the deterministic second stage of the backward's dweight/dbias
reduction (the first stage is in norm_bwd.py).

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
def _normalize_store(h, rows, row_ok, cols, col_ok, mask, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, N, eps,
                     w_early, b_early,
                     IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, EARLY: tl.constexpr):
    """Rows of fp32 h (masked elements 0) -> mean (LayerNorm), rstd and y = h_hat * weight + bias, stored.

    Weight and bias are read after the reductions, so they hold no registers while h and the reductions'
    temporaries do: loading them before x (as Liger does) cost LN 8192x8192 27% (H200, 2.73 vs 3.72 TB/s).
    EARLY: they were read with x (w_early, b_early, fp32) and are used from registers; see ops.norm_configs."""
    if IS_RMS:
        rstd = tl.math.rsqrt(row_mean(tl.sum(h * h, axis=1), N) + eps)
        y = h * rstd[:, None]
    else:
        mean = row_mean(tl.sum(h, axis=1), N)
        d = tl.where(mask, h - mean[:, None], 0.0)
        rstd = tl.math.rsqrt(row_mean(tl.sum(d * d, axis=1), N) + eps)
        y = d * rstd[:, None]
        tl.store(mean_ptr + rows, mean, mask=row_ok)
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
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
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
    _normalize_store(h, rows, row_ok, cols, col_ok, mask, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, N, eps,
                     w_early, b_early, IS_RMS, HAS_W, HAS_B, EARLY_PARAMS)


@triton.jit
def _load_h_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn,
                  HAS_IB: tl.constexpr, HAS_RES: tl.constexpr, FROM_H: tl.constexpr):
    """One chunk of h in fp32: read back from h_row (FROM_H) or summed from x, input_bias, residual."""
    if FROM_H:
        h = tl.load(h_row + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        h = tl.load(x_row + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
        if HAS_IB:
            h += tl.load(ib_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            h += tl.load(res_row + cols * stride_rn, mask=mask, other=0.0).to(tl.float32)
    return h


@triton.jit
def norm_fwd_looped(
    x_ptr, ib_ptr, res_ptr, w_ptr, b_ptr, y_ptr, h_ptr, mean_ptr, rstd_ptr,
    N, stride_xm, stride_xn, stride_rm, stride_rn, eps,
    IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_IB: tl.constexpr,
    HAS_RES: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr,
):
    """STAGES: both chunk loops' loads pipelined through shared memory, this deep (1: not)."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    res_row = res_ptr + row * stride_rm
    h_row = h_ptr + row * N
    y_row = y_ptr + row * N
    eps = tl.cast(eps, tl.float32)
    count = tl.full([], 0.0, tl.float32)
    mean = tl.full([], 0.0, tl.float32)
    m2 = tl.full([], 0.0, tl.float32)  # RMSNorm: the sum of squares; LayerNorm: the sum of squared deviations (Chan's M2)
    for start in tl.range(0, N, BLOCK_N, num_stages=STAGES):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < N
        h = _load_h_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn,
                          HAS_IB, HAS_RES, False)
        if HAS_RES:
            h = h.to(h_ptr.dtype.element_ty)
            tl.store(h_row + cols, h, mask=mask)
            h = h.to(tl.float32)
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
    if not IS_RMS:
        tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)
    n_chunks = tl.cdiv(N, BLOCK_N)
    for i in tl.range(n_chunks, num_stages=STAGES):
        cols = (n_chunks - 1 - i) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = cols < N
        h = _load_h_chunk(x_row, ib_ptr, res_row, h_row, cols, mask, stride_xn, stride_rn,
                          HAS_IB, HAS_RES, HAS_RES)
        if IS_RMS:
            y = h * rstd
        else:
            y = (h - mean) * rstd
        if HAS_W:
            y *= tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_B:
            y += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


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
