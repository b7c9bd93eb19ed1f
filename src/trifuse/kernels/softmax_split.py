"""Wide-row softmax on a GPU: one row split across SPLITS programs, each keeping its chunk in registers.

Each program reduces its chunk, publishes the partial statistics, waits until every program of its row
has published, combines them and writes its chunk: one read and one write of the row (the looped kernels
read it twice). Siblings of a row have consecutive program ids, so with in-order block dispatch they are
resident together and the wait cannot deadlock. Compiled GPUs only: the interpreter runs programs one
after another, where the first would wait forever (it uses the looped kernels instead).
"""
import triton
import triton.language as tl

from .softmax import LN2, LOG2E


@triton.jit
def _wait_for_row(cnt_ptr, row, SPLITS: tl.constexpr):
    # acq_rel: orders this program's published partials before the count, and siblings' after.
    seen = tl.atomic_add(cnt_ptr + row, 1, sem="acq_rel") + 1
    while seen < SPLITS:
        seen = tl.atomic_add(cnt_ptr + row, 0, sem="acquire")


@triton.jit
def _row_chunk(N, SPLITS: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's row (also as int64), its chunk index, the chunk's columns and their bounds mask."""
    pid = tl.program_id(0)
    row = pid // SPLITS
    split = pid % SPLITS
    cols = split * BLOCK_N + tl.arange(0, BLOCK_N)
    return row, row.to(tl.int64), split, cols, cols < N


@triton.jit
def softmax_fwd_split(
    x_ptr, y_ptr, ws_ptr, cnt_ptr, N, stride_xm, stride_xn, stride_ym,
    LOG: tl.constexpr, SPLITS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row, row64, split, cols, mask = _row_chunk(N, SPLITS, BLOCK_N)
    x = tl.load(x_ptr + row64 * stride_xm + cols * stride_xn, mask=mask, other=-float("inf")).to(tl.float32)
    m = tl.max(x, axis=0)
    # A chunk of only -inf (or only padding) contributes nothing instead of exp2(nan).
    e = tl.where(m == -float("inf"), 0.0, tl.exp2((x - m) * LOG2E))
    ws_row = ws_ptr + row64 * (2 * SPLITS)
    tl.atomic_xchg(ws_row + split, m, sem="relaxed")
    tl.atomic_xchg(ws_row + SPLITS + split, tl.sum(e, axis=0), sem="relaxed")
    _wait_for_row(cnt_ptr, row, SPLITS)
    parts = tl.arange(0, SPLITS)
    pm = tl.atomic_add(ws_row + parts, 0.0, sem="acquire")
    ps = tl.atomic_add(ws_row + SPLITS + parts, 0.0, sem="acquire")
    row_max = tl.max(pm, axis=0)
    total = tl.sum(tl.where(pm == -float("inf"), 0.0, ps * tl.exp2((pm - row_max) * LOG2E)), axis=0)
    total = tl.where(row_max == -float("inf"), float("nan"), total)  # all -inf: nan, as torch
    if LOG:
        y = x - (row_max + tl.log2(total) * LN2)
    else:
        y = tl.exp2((x - row_max) * LOG2E) * (1.0 / total)
    tl.store(y_ptr + row64 * stride_ym + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_bwd_split(
    y_ptr, dy_ptr, dx_ptr, ws_ptr, cnt_ptr, N, stride_ym, stride_dym, stride_dyn, stride_dxm,
    LOG: tl.constexpr, SPLITS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row, row64, split, cols, mask = _row_chunk(N, SPLITS, BLOCK_N)
    y = tl.load(y_ptr + row64 * stride_ym + cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row64 * stride_dym + cols * stride_dyn, mask=mask, other=0.0).to(tl.float32)
    partial = tl.sum(dy, axis=0) if LOG else tl.sum(y * dy, axis=0)
    ws_row = ws_ptr + row64 * SPLITS
    tl.atomic_xchg(ws_row + split, partial, sem="relaxed")
    _wait_for_row(cnt_ptr, row, SPLITS)
    total = tl.sum(tl.atomic_add(ws_row + tl.arange(0, SPLITS), 0.0, sem="acquire"), axis=0)
    if LOG:
        dx = dy - tl.exp2(y * LOG2E) * total
    else:
        dx = y * (dy - total)
    tl.store(dx_ptr + row64 * stride_dxm + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
