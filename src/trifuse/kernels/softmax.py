"""Softmax and log-softmax over rows, forward and backward.

Two shapes of kernel: `*_rows` keeps BLOCK_M whole rows on chip and makes one pass (rows up to
MAX_FUSED_N elements); `*_looped` streams one wide row in chunks, an online max/sum pass then an output
pass that walks the chunks in reverse so the most recently read ones are still in L2.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def softmax_fwd_rows(
    x_ptr, y_ptr, M, N, stride_xm, stride_xn, stride_ym,
    LOG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    rows = rows.to(tl.int64)
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :] * stride_xn, mask=mask,
                other=-float("inf")).to(tl.float32)
    m = tl.max(x, axis=1)
    # A row of -inf gives exp2(nan) = nan, as torch.softmax does.
    e = tl.exp2((x - m[:, None]) * LOG2E)
    s = tl.sum(e, axis=1)
    if LOG:
        y = x - (m + tl.log2(s) * LN2)[:, None]
    else:
        y = e * (1.0 / s)[:, None]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _row_max_sum(x_row, N, stride_xn, BLOCK_N: tl.constexpr):
    """Online max and sum of exp over one row, read once in BLOCK_N chunks."""
    m = tl.full([], -float("inf"), tl.float32)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        x = tl.load(x_row + cols * stride_xn, mask=cols < N, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # While everything seen is -inf, keep the sum at 0 instead of exp2(-inf - -inf) = nan.
        alpha = tl.where(m_new == -float("inf"), 1.0, tl.exp2((m - m_new) * LOG2E))
        e = tl.where(m_new == -float("inf"), 0.0, tl.exp2((x - m_new) * LOG2E))
        acc = acc * alpha + e
        m = m_new
    s = tl.sum(acc, axis=0)
    # A row of -inf (m = -inf) yields nan, matching torch.softmax.
    s = tl.where(m == -float("inf"), float("nan"), s)
    return m, s


@triton.jit
def softmax_fwd_looped(
    x_ptr, y_ptr, N, stride_xm, stride_xn, stride_ym,
    LOG: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    y_row = y_ptr + row * stride_ym
    m, s = _row_max_sum(x_row, N, stride_xn, BLOCK_N)
    log_s = tl.log2(s) * LN2
    inv_s = 1.0 / s
    n_chunks = tl.cdiv(N, BLOCK_N)
    for i in range(n_chunks):
        cols = (n_chunks - 1 - i) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = cols < N
        x = tl.load(x_row + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
        if LOG:
            y = x - m - log_s
        else:
            y = tl.exp2((x - m) * LOG2E) * inv_s
        tl.store(y_row + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_bwd_rows(
    y_ptr, dy_ptr, dx_ptr, M, N, stride_ym, stride_dym, stride_dyn, stride_dxm,
    LOG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    rows = rows.to(tl.int64)
    y = tl.load(y_ptr + rows[:, None] * stride_ym + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + rows[:, None] * stride_dym + cols[None, :] * stride_dyn, mask=mask,
                 other=0.0).to(tl.float32)
    if LOG:
        # y = log p: dx = dy - p * sum(dy)
        dx = dy - tl.exp2(y * LOG2E) * tl.sum(dy, axis=1)[:, None]
    else:
        dx = y * (dy - tl.sum(y * dy, axis=1)[:, None])
    tl.store(dx_ptr + rows[:, None] * stride_dxm + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_bwd_looped(
    y_ptr, dy_ptr, dx_ptr, N, stride_ym, stride_dym, stride_dyn, stride_dxm,
    LOG: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    y_row = y_ptr + row * stride_ym
    dy_row = dy_ptr + row * stride_dym
    dx_row = dx_ptr + row * stride_dxm
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < N
        dy = tl.load(dy_row + cols * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        if LOG:
            acc += dy
        else:
            acc += dy * tl.load(y_row + cols, mask=mask, other=0.0).to(tl.float32)
    total = tl.sum(acc, axis=0)
    n_chunks = tl.cdiv(N, BLOCK_N)
    for i in range(n_chunks):
        cols = (n_chunks - 1 - i) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = cols < N
        y = tl.load(y_row + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + cols * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        if LOG:
            dx = dy - tl.exp2(y * LOG2E) * total
        else:
            dx = y * (dy - total)
        tl.store(dx_row + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
