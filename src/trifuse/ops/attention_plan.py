"""Shape arithmetic the attention launchers share: sizes, longest-first chunks of the causal grids, the
FLOP model."""
from __future__ import annotations

import torch


def dims(q: torch.Tensor, k: torch.Tensor):
    B, Hq, Sq, D = q.shape
    # D becomes a constexpr: concrete even when torch.compile hands SymInts.
    return B, Hq, Sq, int(D), k.shape[1], k.shape[2]


# Causal grids start the longest blocks first over chunks of (batch, KV head) units (kernels'
# longest_first); a chunk's streamed tensors (K/V for the forward and dQ, Q/dO of the KV group for dK/dV)
# are kept to about a third of the H100/H200's 50 MB L2, where units side by side reuse them. Units of
# LPT_UNIT_PROGRAMS[1] programs or more fill most of the GPU by themselves, and units of fewer than
# LPT_UNIT_PROGRAMS[0] leave only a short tail: both keep chunks of one (unit after unit).
# H100, bf16, causal, TFLOP/s before -> after (bench, device time, first run after): D=128 fwd 359 -> 371 (8x16x2048),
# 423 -> 444 (4x16x4096), 461 -> 490 (2x16x8192); bwd 337 -> 346, 368 -> 382 at 4096 / 8192; D=64
# 8x32x2048 fwd 346 -> 356, bwd 276 -> 282. Chunks of units with 128 programs measured 2-3% slower
# (16384 MHA fwd, GQA 8:1 2048 fwd), of units with 4-8 programs 3-7% slower (S = 512 / 1024).
L2_CHUNK_BYTES = 16 << 20
LPT_UNIT_PROGRAMS = (16, 128)


def lpt_chunk(causal: bool, unit_bytes: int, unit_programs: int) -> int:
    """Units per longest-first chunk: as many as L2_CHUNK_BYTES holds, at least one (1 without causal:
    the kernels then ignore it, and 1 for units with too few or too many programs, see above)."""
    if not causal or not LPT_UNIT_PROGRAMS[0] <= unit_programs < LPT_UNIT_PROGRAMS[1]:
        return 1
    return max(1, L2_CHUNK_BYTES // max(unit_bytes, 1))


def head_split(group: int, programs: int, causal: bool, split_below: int, target: int) -> int:
    """Programs per (key block, KV head) of a causal GQA dK/dV grid of `programs` programs: 1 unless causal
    with fewer than split_below programs; then the smallest divisor of the group size that brings the grid
    to `target` programs (else the whole group, one query head a program)."""
    if not causal or programs >= split_below:
        return 1
    return next((s for s in range(1, group + 1) if group % s == 0 and programs * s >= target), group)


def visible_pairs(seq_q: int, seq_kv: int, causal: bool) -> float:
    """(query, key) pairs the scores cover. Causal with Sq = Skv counts S^2/2 (the convention of SDPA
    benchmarks and ANCHORS.md); other causal shapes count exactly (top-left: row i sees min(i+1, Skv))."""
    if not causal:
        return float(seq_q * seq_kv)
    if seq_q == seq_kv:
        return seq_q * seq_kv / 2
    n = min(seq_q, seq_kv)
    return n * (n + 1) / 2 + max(0, seq_q - seq_kv) * seq_kv


def attention_flops(batch: int, heads_q: int, seq_q: int, seq_kv: int, head_dim: int, causal: bool,
                    direction: str = "fwd") -> float:
    """fwd: two matmuls (QK^T, PV) = 4 * pairs * D per head; bwd: 2.5x fwd (five matmuls, one recompute
    uncounted), the convention FlashAttention's benchmarks use."""
    fwd = 4.0 * batch * heads_q * visible_pairs(seq_q, seq_kv, causal) * head_dim
    return {"fwd": fwd, "bwd": 2.5 * fwd, "fwd+bwd": 3.5 * fwd}[direction]
