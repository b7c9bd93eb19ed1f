"""Softmax launchers: config heuristic, destination-passing launches, and the op's byte model."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..kernels import softmax as k
from ..kernels import softmax_split as ks
from ..runtime import INTERPRET
from ._launch import cdiv, launcher, next_pow2

# Widest row one program keeps on chip (in registers) for the one-pass kernel. Beyond it the row is
# streamed twice (online max/sum, then output). 32k fp32 values is 32 per thread at 32 warps.
MAX_FUSED_N = 32768
# Chunk of a wide row the looped kernels handle per step, and their warps: 8192 x 8 warps was best or
# within 5% of best at N = 65k, 131k and 262k in the H200 sweep (2.86, 2.57, 2.39 TB/s).
LOOP_BLOCK_N = 8192
LOOP_WARPS = 8
# On a compiled GPU, rows wider than this are split across SPLIT_BLOCK_N-wide programs that combine
# their partial statistics in place (kernels/softmax_split.py): one read of the row instead of two.
# H200 sweep, bf16 fwd (TB/s): N=32k rows 3.26 vs split 2.97; 65k split 2.91 vs looped 2.86;
# 131k 2.84 vs 2.57; 262k 2.75 vs 2.41. 8192-wide chunks with 8 warps were best or within 2%.
SPLIT_MIN_N = 32768
SPLIT_BLOCK_N = 8192
SPLIT_WARPS = 8


@dataclass(frozen=True)
class RowsConfig:
    block_m: int
    block_n: int
    num_warps: int


# (widest row, rows per program, warps), from scripts/sweep_softmax.py on an H200, bf16 forward
# (2026-11-21): 8192x512 best at 2 rows/2 warps (1.97 TB/s, launch-bound), 16384x1024 at 2 rows/4 warps
# (3.26), 4096x4096 at 1 row/4 warps (3.21), 8192x8192 at 1 row/16 warps (3.88), 4096x32768 at
# 1 row/16 warps (3.26; 32 warps no better).
_ROWS_TABLE = ((512, 2, 2), (1024, 2, 4), (4096, 1, 4), (32768, 1, 16))


def rows_config(n: int) -> RowsConfig:
    return _rows_config(int(n))  # a SymInt under torch.compile: constexprs must be concrete


@functools.cache
def _rows_config(n: int) -> RowsConfig:
    block_n = next_pow2(max(n, 1))
    for widest, block_m, num_warps in _ROWS_TABLE:
        if block_n <= widest:
            # Very short rows: keep about 512 elements per program so programs are not trivially small.
            block_m = max(block_m, 512 // block_n)
            return RowsConfig(block_m, block_n, num_warps)
    return RowsConfig(1, block_n, 32)


def _path(n: int, max_fused_n: int) -> str:
    if n <= max_fused_n and (INTERPRET or n <= SPLIT_MIN_N):
        return "rows"
    return "split" if not INTERPRET and n > SPLIT_MIN_N else "looped"


def _split_workspace(m: int, n: int, values_per_split: int, like: torch.Tensor):
    splits = next_pow2(cdiv(n, SPLIT_BLOCK_N))
    ws = torch.empty((m, values_per_split * splits), dtype=torch.float32, device=like.device)
    return splits, ws, torch.zeros((m,), dtype=torch.int32, device=like.device)


def softmax_fwd_into(x: torch.Tensor, out: torch.Tensor, log: bool, max_fused_n: int = MAX_FUSED_N) -> None:
    """x: (M, N) with any strides; out: (M, N) with unit column stride."""
    M, N = x.shape
    if M == 0 or N == 0:
        return
    path = _path(int(N), max_fused_n)
    if path == "rows":
        cfg = rows_config(N)
        launcher(k.softmax_fwd_rows)[(cdiv(M, cfg.block_m),)](
            x, out, M, N, *x.stride(), out.stride()[0],
            LOG=log, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
        )
    elif path == "split":
        splits, ws, cnt = _split_workspace(M, int(N), 2, x)
        launcher(ks.softmax_fwd_split)[(M * splits,)](
            x, out, ws, cnt, N, *x.stride(), out.stride()[0],
            LOG=log, SPLITS=splits, BLOCK_N=SPLIT_BLOCK_N, num_warps=SPLIT_WARPS,
        )
    else:
        block_n = min(LOOP_BLOCK_N, next_pow2(max_fused_n))
        launcher(k.softmax_fwd_looped)[(M,)](
            x, out, N, *x.stride(), out.stride()[0],
            LOG=log, BLOCK_N=block_n, num_warps=LOOP_WARPS,
        )


def softmax_bwd_into(
    y: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, log: bool, max_fused_n: int = MAX_FUSED_N
) -> None:
    """y, dx: (M, N) with unit column stride; dy: (M, N) with any strides."""
    M, N = y.shape
    if M == 0 or N == 0:
        return
    strides = (y.stride()[0], *dy.stride(), dx.stride()[0])  # stride() once: stride(i) costs ~0.5 us
    path = _path(int(N), max_fused_n)
    if path == "rows":
        cfg = rows_config(N)
        launcher(k.softmax_bwd_rows)[(cdiv(M, cfg.block_m),)](
            y, dy, dx, M, N, *strides,
            LOG=log, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
        )
    elif path == "split":
        splits, ws, cnt = _split_workspace(M, int(N), 1, y)
        launcher(ks.softmax_bwd_split)[(M * splits,)](
            y, dy, dx, ws, cnt, N, *strides,
            LOG=log, SPLITS=splits, BLOCK_N=SPLIT_BLOCK_N, num_warps=SPLIT_WARPS,
        )
    else:
        block_n = min(LOOP_BLOCK_N, next_pow2(max_fused_n))
        launcher(k.softmax_bwd_looped)[(M,)](
            y, dy, dx, N, *strides, LOG=log, BLOCK_N=block_n, num_warps=LOOP_WARPS,
        )


def softmax_bytes(m: int, n: int, elem_size: int, direction: str = "fwd") -> int:
    """Least traffic: forward reads x and writes y; backward reads y and dy and writes dx."""
    per_elem = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[direction]
    return per_elem * m * n * elem_size


def naive_softmax_bytes(m: int, n: int, elem_size: int, direction: str = "fwd", log: bool = False) -> int:
    """Traffic of the composition max, x-max, exp, sum, divide as separate kernels (the seeds' count).

    Forward: amax reads x; sub reads x writes t; exp reads t writes e; sum reads e; div reads e writes y:
    5 full reads and 3 full writes. Backward: mul reads y, dy writes p; sum reads p; sub reads dy writes
    d; mul reads y, d writes dx: 6 reads and 3 writes. log=True: the composition's .log() after it, one
    more read and write forward, and its backward's dy / y (two reads, one write).
    """
    per_elem = {"fwd": 8, "bwd": 9, "fwd+bwd": 17}[direction]
    if log:
        per_elem += {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[direction]
    return per_elem * m * n * elem_size
