"""Softmax launchers: config heuristic, destination-passing launches, and the op's byte model."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
from torch.library import wrap_triton

from ..kernels import softmax as k

# Widest row one program keeps on chip (in registers) for the one-pass kernel. Beyond it the row is
# streamed twice (online max/sum, then output). 32k fp32 values is 32 per thread at 32 warps.
MAX_FUSED_N = 32768
# Chunk of a wide row the looped kernels handle per step.
LOOP_BLOCK_N = 8192
# Elements one program of the one-pass kernel aims to hold, several short rows at once, so that narrow
# rows (N = 512) still move enough bytes per program to hide latency.
TILE_ELEMS = 8192


@dataclass(frozen=True)
class RowsConfig:
    block_m: int
    block_n: int
    num_warps: int


def rows_config(n: int) -> RowsConfig:
    block_n = triton.next_power_of_2(max(n, 1))
    block_m = max(1, min(64, TILE_ELEMS // block_n))
    # About 16 fp32 values per thread: enough loads in flight without spilling.
    num_warps = max(4, min(32, block_m * block_n // 512))
    return RowsConfig(block_m, block_n, num_warps)


def softmax_fwd_into(x: torch.Tensor, out: torch.Tensor, log: bool, max_fused_n: int = MAX_FUSED_N) -> None:
    """x: (M, N) with any strides; out: (M, N) with unit column stride."""
    M, N = x.shape
    if M == 0 or N == 0:
        return
    if N <= max_fused_n:
        cfg = rows_config(N)
        wrap_triton(k.softmax_fwd_rows)[(triton.cdiv(M, cfg.block_m),)](
            x, out, M, N, x.stride(0), x.stride(1), out.stride(0),
            LOG=log, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
        )
    else:
        block_n = min(LOOP_BLOCK_N, triton.next_power_of_2(max_fused_n))
        wrap_triton(k.softmax_fwd_looped)[(M,)](
            x, out, N, x.stride(0), x.stride(1), out.stride(0),
            LOG=log, BLOCK_N=block_n, num_warps=16,
        )


def softmax_bwd_into(
    y: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, log: bool, max_fused_n: int = MAX_FUSED_N
) -> None:
    """y, dx: (M, N) with unit column stride; dy: (M, N) with any strides."""
    M, N = y.shape
    if M == 0 or N == 0:
        return
    strides = (y.stride(0), dy.stride(0), dy.stride(1), dx.stride(0))
    if N <= max_fused_n:
        cfg = rows_config(N)
        wrap_triton(k.softmax_bwd_rows)[(triton.cdiv(M, cfg.block_m),)](
            y, dy, dx, M, N, *strides,
            LOG=log, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
        )
    else:
        block_n = min(LOOP_BLOCK_N, triton.next_power_of_2(max_fused_n))
        wrap_triton(k.softmax_bwd_looped)[(M,)](
            y, dy, dx, N, *strides, LOG=log, BLOCK_N=block_n, num_warps=16,
        )


def softmax_bytes(m: int, n: int, elem_size: int, direction: str = "fwd") -> int:
    """Least traffic: forward reads x and writes y; backward reads y and dy and writes dx."""
    per_elem = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[direction]
    return per_elem * m * n * elem_size


def naive_softmax_bytes(m: int, n: int, elem_size: int, direction: str = "fwd") -> int:
    """Traffic of the composition max, x-max, exp, sum, divide as separate kernels (the seeds' count).

    Forward: amax reads x; sub reads x writes t; exp reads t writes e; sum reads e; div reads e writes y:
    5 full reads and 3 full writes. Backward: mul reads y, dy writes p; sum reads p; sub reads dy writes
    d; mul reads y, d writes dx: 6 reads and 3 writes.
    """
    per_elem = {"fwd": 8, "bwd": 9, "fwd+bwd": 17}[direction]
    return per_elem * m * n * elem_size
