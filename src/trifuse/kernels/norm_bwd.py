"""LayerNorm / RMSNorm backward: dx (= dh) and per-program fp32 partial column sums.

With h the norm's input, h_hat = (h - mean) * rstd (RMSNorm: h * rstd) and g = dy * weight:
    dh = rstd * (g - h_hat * mean(g * h_hat) - mean(g))      (RMSNorm drops the mean(g) term)
    dh += dh_out                                             (the gradient of the returned h, add_* ops)
    dweight = colsum(dy * h_hat), dbias = colsum(dy), d(input_bias) = colsum(dh)
dx and dresidual are dh itself. h is the saved h (add_* ops) or x + input_bias recomputed (HAS_IB).

The column sums are two-stage and deterministic (no atomics): each program writes its own row of a
[programs, N] fp32 partial buffer, and `colsum` (norm.py) adds those rows in a fixed order.
`norm_bwd_rows` is persistent: a fixed number of programs stride over tiles of BLOCK_M rows and keep
the running column sums in registers, so the partial buffer has only `programs` rows whatever M is.
`norm_bwd_looped` (rows too wide for registers) gives each program BLOCK_R rows, streamed in chunks
twice (row sums, then dh in reverse chunk order for L2 reuse); it writes one partial row per program.
"""
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents

from .norm import row_mean


@triton.jit
def _load_rows(src_ptr, dy_ptr, tile, M, cols, col_ok, stride_sm, stride_sn, stride_dym, stride_dyn,
               BLOCK_M: tl.constexpr):
    """h and dy of one tile of BLOCK_M rows, in their storage dtype (all masked past M)."""
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = (rows < M)[:, None] & col_ok[None, :]
    rows = rows.to(tl.int64)
    h = tl.load(src_ptr + rows[:, None] * stride_sm + cols[None, :] * stride_sn, mask=mask, other=0.0)
    dy = tl.load(dy_ptr + rows[:, None] * stride_dym + cols[None, :] * stride_dyn, mask=mask, other=0.0)
    return h, dy


@triton.jit
def _add_pair(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def norm_bwd_rows(
    dy_ptr, dho_ptr, src_ptr, ib_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr,
    pdw_ptr, pdb_ptr, pdib_ptr,
    M, N, stride_dym, stride_dyn, stride_dhm, stride_dhn, stride_sm, stride_sn,
    IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_IB: tl.constexpr, HAS_DHO: tl.constexpr,
    NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, NEED_DIB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREFETCH: tl.constexpr, RELOAD_VECS: tl.constexpr,
    PAIRED_SUMS: tl.constexpr, LAUNCH_DEPENDENTS: tl.constexpr, STAGES: tl.constexpr, ACC_ROWS: tl.constexpr,
):
    """PREFETCH: the next tile's h and dy loads are issued before this tile's reductions, so each
    program keeps memory busy across its loop's load -> reduce -> store chain.
    STAGES > 1 (with PREFETCH off): Triton's pipeliner streams the next STAGES - 1 tiles' h and dy through
    shared memory (cp.async), deeper than a register prefetch and without its registers.
    RELOAD_VECS: weight and input bias are read again (from L1/L2) for every tile instead of living
    in registers across the loop: wide rows with several column sums run out of registers.
    PAIRED_SUMS (LayerNorm): the row sums of g * h_hat and g in one two-value reduction (one cross-warp
    exchange instead of two); on by default (ops.norm_bwd_configs.BWD_PAIRED_SUMS has the sweep's figures).
    ACC_ROWS: the column sums accumulate as [BLOCK_M, BLOCK_N] tiles, added up once after the loop,
    instead of a cross-warp reduction over the tile's rows per tile per sum (narrow rows: several rows a
    tile, a register or two each).
    LAUNCH_DEPENDENTS: let the column-sum kernel, launched with PDL, start its programs now (they wait
    for this grid's writes in griddepcontrol.wait): its launch latency overlaps this kernel."""
    if LAUNCH_DEPENDENTS:
        gdc_launch_dependents()
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if not RELOAD_VECS:
        if HAS_W:
            w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        if HAS_IB:
            ib = tl.load(ib_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    if ACC_ROWS:
        acc_dw = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_db = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_dib = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    else:
        acc_dw = tl.zeros([BLOCK_N], dtype=tl.float32)
        acc_db = tl.zeros([BLOCK_N], dtype=tl.float32)
        acc_dib = tl.zeros([BLOCK_N], dtype=tl.float32)
    n_tiles = tl.cdiv(M, BLOCK_M)
    if PREFETCH:
        h_next, dy_next = _load_rows(src_ptr, dy_ptr, pid, M, cols, col_ok, stride_sm, stride_sn,
                                     stride_dym, stride_dyn, BLOCK_M)
    for tile in tl.range(pid, n_tiles, n_programs, num_stages=STAGES):
        if PREFETCH:
            h_raw, dy_raw = h_next, dy_next
            h_next, dy_next = _load_rows(src_ptr, dy_ptr, tile + n_programs, M, cols, col_ok, stride_sm,
                                         stride_sn, stride_dym, stride_dyn, BLOCK_M)
        else:
            h_raw, dy_raw = _load_rows(src_ptr, dy_ptr, tile, M, cols, col_ok, stride_sm, stride_sn,
                                       stride_dym, stride_dyn, BLOCK_M)
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        mask = row_ok[:, None] & col_ok[None, :]
        rows = rows.to(tl.int64)
        if RELOAD_VECS:
            if HAS_W:
                w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            if HAS_IB:
                ib = tl.load(ib_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        h = h_raw.to(tl.float32)
        if HAS_IB:
            h += ib[None, :]
        dy = dy_raw.to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
        if IS_RMS:
            h_hat = h * rstd[:, None]
        else:
            mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
            # Masked columns must not leak -mean into the row sums below.
            h_hat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_W:
            g = dy * w[None, :]
        else:
            g = dy
        if IS_RMS:
            c1 = row_mean(tl.sum(g * h_hat, axis=1), N)
            dh = (g - h_hat * c1[:, None]) * rstd[:, None]
        else:
            if PAIRED_SUMS:
                s1, s2 = tl.reduce((g * h_hat, g), 1, _add_pair)
            else:
                s1 = tl.sum(g * h_hat, axis=1)
                s2 = tl.sum(g, axis=1)
            c1 = row_mean(s1, N)
            c2 = row_mean(s2, N)
            dh = (g - h_hat * c1[:, None] - c2[:, None]) * rstd[:, None]
        if HAS_DHO:
            dh += tl.load(dho_ptr + rows[:, None] * stride_dhm + cols[None, :] * stride_dhn, mask=mask,
                          other=0.0).to(tl.float32)
        tl.store(dx_ptr + rows[:, None] * N + cols[None, :], dh.to(dx_ptr.dtype.element_ty), mask=mask)
        # dy is 0 past M and N (masked loads): only dh needs its mask.
        if ACC_ROWS:
            if NEED_DW:
                acc_dw += dy * h_hat
            if NEED_DB:
                acc_db += dy
            if NEED_DIB:
                acc_dib += tl.where(mask, dh, 0.0)
        else:
            if NEED_DW:
                acc_dw += tl.sum(dy * h_hat, axis=0)
            if NEED_DB:
                acc_db += tl.sum(dy, axis=0)
            if NEED_DIB:
                acc_dib += tl.sum(tl.where(mask, dh, 0.0), axis=0)
    part = pid.to(tl.int64) * N + cols
    if NEED_DW:
        tl.store(pdw_ptr + part, _col_total(acc_dw, ACC_ROWS), mask=col_ok)
    if NEED_DB:
        tl.store(pdb_ptr + part, _col_total(acc_db, ACC_ROWS), mask=col_ok)
    if NEED_DIB:
        tl.store(pdib_ptr + part, _col_total(acc_dib, ACC_ROWS), mask=col_ok)


@triton.jit
def _col_total(acc, ACC_ROWS: tl.constexpr):
    """A column-sum accumulator as one [BLOCK_N] row (ACC_ROWS: summed over its tile rows now)."""
    if ACC_ROWS:  # a compile-time branch: one return, whose type the compiler sees once
        total = tl.sum(acc, axis=0)
    else:
        total = acc
    return total


@triton.jit
def _looped_chunk(src_ptr, dy_ptr, ib_ptr, w_ptr, rows, row_ok, cols, N, mean, rstd,
                  stride_sm, stride_sn, stride_dym, stride_dyn, HAS_IB: tl.constexpr, HAS_W: tl.constexpr):
    """One chunk of columns of BLOCK_R rows, in fp32: (h_hat, dy, g = dy * weight, mask); h_hat is 0
    where masked, so masked columns add nothing to the row sums."""
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    h = tl.load(src_ptr + rows[:, None] * stride_sm + cols[None, :] * stride_sn, mask=mask,
                other=0.0).to(tl.float32)
    if HAS_IB:
        h += tl.load(ib_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    h_hat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
    dy = tl.load(dy_ptr + rows[:, None] * stride_dym + cols[None, :] * stride_dyn, mask=mask,
                 other=0.0).to(tl.float32)
    if HAS_W:
        g = dy * tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    else:
        g = dy
    return h_hat, dy, g, mask


@triton.jit
def norm_bwd_looped(
    dy_ptr, dho_ptr, src_ptr, ib_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr,
    pdw_ptr, pdb_ptr, pdib_ptr,
    M, N, stride_dym, stride_dyn, stride_dhm, stride_dhn, stride_sm, stride_sn,
    IS_RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_IB: tl.constexpr, HAS_DHO: tl.constexpr,
    NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, NEED_DIB: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, LAUNCH_DEPENDENTS: tl.constexpr, STAGES: tl.constexpr,
):
    """STAGES: both chunk loops' loads pipelined through shared memory, this deep (1: not)."""
    if LAUNCH_DEPENDENTS:
        gdc_launch_dependents()
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < M
    rows = rows.to(tl.int64)
    rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
    if IS_RMS:
        mean = tl.zeros([BLOCK_R], dtype=tl.float32)
    else:
        mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
    # Pass 1: the row sums mean(g * h_hat) and mean(g).
    s1 = tl.zeros([BLOCK_R], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in tl.range(0, N, BLOCK_N, num_stages=STAGES):
        cols = start + tl.arange(0, BLOCK_N)
        h_hat, _dy, g, _mask = _looped_chunk(src_ptr, dy_ptr, ib_ptr, w_ptr, rows, row_ok, cols, N, mean, rstd,
                                             stride_sm, stride_sn, stride_dym, stride_dyn, HAS_IB, HAS_W)
        s1 += tl.sum(g * h_hat, axis=1)
        s2 += tl.sum(g, axis=1)
    c1 = row_mean(s1, N)
    c2 = row_mean(s2, N)
    # Pass 2, last chunk first: dh, dx, and this program's column sums.
    n_chunks = tl.cdiv(N, BLOCK_N)
    for i in tl.range(n_chunks, num_stages=STAGES):
        cols = (n_chunks - 1 - i) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        h_hat, dy, g, mask = _looped_chunk(src_ptr, dy_ptr, ib_ptr, w_ptr, rows, row_ok, cols, N, mean, rstd,
                                           stride_sm, stride_sn, stride_dym, stride_dyn, HAS_IB, HAS_W)
        if IS_RMS:
            dh = (g - h_hat * c1[:, None]) * rstd[:, None]
        else:
            dh = (g - h_hat * c1[:, None] - c2[:, None]) * rstd[:, None]
        if HAS_DHO:
            dh += tl.load(dho_ptr + rows[:, None] * stride_dhm + cols[None, :] * stride_dhn, mask=mask,
                          other=0.0).to(tl.float32)
        tl.store(dx_ptr + rows[:, None] * N + cols[None, :], dh.to(dx_ptr.dtype.element_ty), mask=mask)
        part = pid.to(tl.int64) * N + cols
        if NEED_DW:
            tl.store(pdw_ptr + part, tl.sum(dy * h_hat, axis=0), mask=col_ok)
        if NEED_DB:
            tl.store(pdb_ptr + part, tl.sum(dy, axis=0), mask=col_ok)
        if NEED_DIB:
            tl.store(pdib_ptr + part, tl.sum(tl.where(mask, dh, 0.0), axis=0), mask=col_ok)
