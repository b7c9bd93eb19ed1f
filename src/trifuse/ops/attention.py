"""Flash attention launchers: config heuristics and destination-passing launches (the Gluon kernels' side is
attention_ws.py, the shared shape arithmetic and FLOP model attention_plan.py).

Tuning hooks (GPU sweeps without editing code): TRIFUSE_ATTN_FWD="block_m,block_n,warps,stages" and
TRIFUSE_ATTN_BWD="m1,n1,m2,n2,warps_kv,warps_q,stages" override the heuristics when set; a `config=`
argument on the launchers overrides both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..kernels import attention_bwd as kb
from ..kernels import attention_fwd as kf
from ..runtime import INTERPRET
from . import attention_ws as ws
from ._launch import cdiv, launcher, next_pow2
from .attention_plan import dims, head_split, lpt_chunk

SUPPORTED_HEAD_DIMS = (32, 64, 96, 128, 256)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class FwdConfig:
    block_m: int  # query rows per program
    block_n: int  # keys per inner step
    num_warps: int
    num_stages: int
    # exp2(s * c - m) as one FFMA (kernel FOLD_SCALE, used when the scale is > 0). H100, bf16, host hidden,
    # best of three alternating rounds, TFLOP/s without -> with: D=128 non-causal 449 -> 466 (8x16x2048),
    # 486 -> 507 (4x16x4096), 521 -> 540 (16384), 506 -> 532 (GQA 8:1, 8192); D=128 causal level
    # (372 / 442 / 519 / 493 either way); D=64 slower (406 -> 392 at 8x32x2048, 351 -> 337 causal).
    fold_scale: bool = False


@dataclass(frozen=True)
class BwdConfig:
    block_m1: int  # dK/dV kernel: query rows per inner step
    block_n1: int  # dK/dV kernel: keys per program
    block_m2: int  # dQ kernel: query rows per program
    block_n2: int  # dQ kernel: keys per inner step
    num_warps_kv: int
    num_warps_q: int
    num_stages: int


# Interpreter: small tiles keep the CPU runs fast and make even short test sequences span several
# blocks; block_m != block_n exercises diagonals that straddle blocks.
INTERP_FWD = FwdConfig(32, 16, 4, 1)
INTERP_BWD = BwdConfig(16, 32, 32, 16, 4, 4, 1)


def _preset_config(name: str, cls, interpreter_config):
    """The config from the environment variable `name` when set, else the interpreter's when interpreting,
    else None (the caller's heuristic decides)."""
    text = os.environ.get(name)
    if not text:
        return interpreter_config if INTERPRET else None
    try:
        return cls(*(int(x) for x in text.split(",")))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {len(cls.__dataclass_fields__)} comma-separated ints "
                         f"({', '.join(cls.__dataclass_fields__)}), got {text!r}") from None


# Causal GQA dK/dV: a KV group's query heads are split over several programs (fp32 partials, summed in a
# fixed order) when the grid is small: its longest programs, each looping over the whole group, were the
# critical path. H100, bf16, backward TFLOP/s by split 1 / 2 / 4 / 8 (an A/B at launcher level, device
# time, the second of two rounds): 2x16x8192x128 8:1 304 / 347 / 357 / 358, 8x16x2048x128 8:1 254 / 270 /
# 287 / 263, 1x16x16384x128 8:1 360 / 374 / 379 / 368; not split: 4x16x4096x128 8:1 non-causal 404 / 393 /
# 388 (no long path to cut, partial traffic to pay), 8x32x2048x64 4:1 causal (1024 programs) 265 / 256 /
# 243.
DKDV_SPLIT_BELOW = 1024  # grids with fewer dK/dV programs are split ...
DKDV_TARGET_PROGRAMS = 2048  # ... until they have this many


def dkdv_head_split(group: int, programs: int, causal: bool) -> int:
    """The Triton dK/dV kernel's head split (attention_plan.head_split with the thresholds above)."""
    return head_split(group, programs, causal, DKDV_SPLIT_BELOW, DKDV_TARGET_PROGRAMS)


def block_d(head_dim: int) -> int:
    """The padded head dim the kernels tile with (D=96 -> 128, masked)."""
    return max(16, next_pow2(head_dim))


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 dots (slow, for checking and small runs), not tf32.
    return "ieee" if dtype == torch.float32 else "tf32"


def fwd_config(head_dim: int, causal: bool, dtype: torch.dtype, seq_q: int) -> FwdConfig:
    """Forward tiles, from scripts/sweep_attention.py on the H200 (bf16, launcher level, TFLOP/s):
    D=128 (128,128,w8,s3) 492 non-causal / 425 causal against 453 / 405 for (128,64,w8,s3);
    D=64 (64,64,w4,s3) 408 / 349 against 396 / 320 for (128,64,w4,s4)."""
    preset = _preset_config("TRIFUSE_ATTN_FWD", FwdConfig, INTERP_FWD)
    if preset is not None:
        return preset
    if dtype == torch.float32:
        # fp32 tiles take twice the shared memory and ieee dots run on the FMA units.
        return FwdConfig(64, 32, 4, 2) if head_dim <= 128 else FwdConfig(32, 32, 4, 1)
    # ptxas -v (sm_90a, bf16): d128 (128,64,w8,s3) 222 regs, no spill, 128 KiB smem; d64 (128,64,w4,s4)
    # 229 regs, no spill; (128,128,w8,s2) at d128 is 248 regs, 160 KiB: a sweep candidate.
    if head_dim > 128:
        # D=256: a 64 x 256 fp32 accumulator is already 64 registers per thread at 8 warps (64 B spill).
        return FwdConfig(64, 64, 8, 2)
    if head_dim <= 64:
        return FwdConfig(64, 64, 4, 3)
    block_m = 128 if seq_q > 64 else 64  # short queries (decode-like): do not waste half the tile
    return FwdConfig(block_m, 128, 8, 3, fold_scale=not causal)


def bwd_config(head_dim: int, causal: bool, dtype: torch.dtype, seq_q: int) -> BwdConfig:
    """Backward tiles: dK/dV programs hold block_n1 keys (dK, dV accumulators in registers) and stream
    query blocks; dQ programs hold block_m2 query rows and stream key blocks."""
    preset = _preset_config("TRIFUSE_ATTN_BWD", BwdConfig, INTERP_BWD)
    if preset is not None:
        return preset
    if dtype == torch.float32:
        return BwdConfig(32, 64, 64, 32, 4, 4, 2) if head_dim <= 128 else BwdConfig(16, 32, 32, 16, 4, 4, 1)
    # Register pressure decides here (ptxas -v on sm_90a, offline, bf16): the dK/dV program keeps two
    # fp32 [block_n1, D] accumulators. D=128: (64,128,w8) spills 380 B, (32,128,w8,s2) 96 B (292 B
    # causal), (16,128,w8,s3) 0 B (120 B causal); D<=64: (32,128,w8,s3) 0 B; the dQ kernel (128,64,w8)
    # does not spill at s2/s3. Measured (scripts/sweep_attention.py, H200, 4x16x4096x128 bf16, TFLOP/s):
    # three stages beat two everywhere; dK/dV (64,128,w8) 402 non-causal despite its spill, (32,64,w4)
    # 344 causal, against 304 / 286 for the former (32,128,w8,s2).
    if head_dim > 128:
        return BwdConfig(16, 64, 64, 32, 8, 8, 2)
    if head_dim <= 64:
        # H200, 8x32x2048x64: dK/dV (32,128,w4) 316 / 252 TFLOP/s non-causal / causal and dQ (64,64,w4)
        # 300 / 266, each against 272 / 237 for (32,128,w8) + (128,64,w8).
        return BwdConfig(32, 128, 64, 64, 4, 4, 3)
    if causal:
        return BwdConfig(32, 64, 128, 64, 4, 8, 3)
    return BwdConfig(64, 128, 128, 64, 8, 8, 3)


def attention_fwd_into(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                       lse: torch.Tensor, causal: bool, scale: float, config: FwdConfig | None = None) -> None:
    """q (B, Hq, Sq, D), k/v (B, Hkv, Skv, D), any strides; writes out (B, Hq, Sq, D) and the natural-log
    LSE (B, Hq, Sq) fp32, contiguous."""
    B, Hq, Sq, D, Hkv, Skv = dims(q, k)
    if B * Hq * Sq == 0:
        return
    if Skv == 0:  # nothing to attend to: SDPA's math returns zeros
        out.zero_()
        lse.fill_(float("-inf"))
        return
    if config is None and ws.ws_applies(q, k, v, out, scale, causal):
        ws.launch_fwd(q, k, v, out, lse, causal, scale)
        return
    cfg = config or fwd_config(D, causal, q.dtype, int(Sq))
    unit_programs = cdiv(Sq, cfg.block_m) * (Hq // Hkv)  # per (batch, KV head)
    launcher(kf.attention_fwd)[(unit_programs * B * Hkv,)](
        q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * Skv * D * k.element_size(), unit_programs),
        CAUSAL=causal, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d(D), HEAD_D=D,
        PREC=dot_precision(q.dtype), NUM_STAGES=cfg.num_stages, FOLD_SCALE=cfg.fold_scale and scale > 0,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def attention_bwd_into(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                       lse: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, causal: bool,
                       scale: float, config: BwdConfig | None = None) -> None:
    """Gradients of attention_fwd_into. do/q/k/v/out any strides; lse as the forward wrote it; writes dq,
    dk, dv (any strides). Deterministic: no atomics anywhere."""
    B, Hq, Sq, D, Hkv, Skv = dims(q, k)
    if Sq == 0 or Skv == 0 or B * Hq == 0:
        dq.zero_()
        dk.zero_()
        dv.zero_()
        return
    cfg = config or bwd_config(D, causal, q.dtype, int(Sq))
    bd = block_d(D)
    prec = dot_precision(q.dtype)
    delta = q.new_empty(B, Hq, Sq, dtype=torch.float32)  # sizes as ints: a size tuple parses slower
    delta_bm = 16 if INTERPRET else min(128, 8192 // bd)  # about 64 fp32 values per thread at 4 warps
    launcher(kb.attention_bwd_delta)[(cdiv(Sq, delta_bm), B * Hq)](
        out, do, delta, *out.stride(), *do.stride(), Hq, Sq,
        BLOCK_M=delta_bm, BLOCK_D=bd, HEAD_D=D, num_warps=4,
    )
    common = {"CAUSAL": causal, "BLOCK_D": bd, "HEAD_D": D, "PREC": prec, "NUM_STAGES": cfg.num_stages,
                  "num_stages": cfg.num_stages}
    gluon = ws.ws_bwd_applies(q, k, v, do, lse, dk, dv, scale, causal)
    group = Hq // Hkv
    kv_blocks = cdiv(Skv, ws.WS_DKDV_KEYS if gluon else cfg.block_n1)
    split = (ws.ws_dkdv_split if gluon else dkdv_head_split)(group, kv_blocks * B * Hkv, causal)
    if split > 1:  # fp32 partials, one per head slice; separate buffers (mutated arguments must not alias)
        dk_out = dk.new_empty(split, B, Hkv, Skv, D, dtype=torch.float32)
        dv_out = dv.new_empty(split, B, Hkv, Skv, D, dtype=torch.float32)
    else:
        dk_out, dv_out = dk, dv
    if gluon:
        ws.launch_dkdv(q, k, v, do, lse, delta, dk_out, dv_out, causal, scale, split)
    else:
        dk_strides = dk_out.stride() if split > 1 else (0, *dk.stride())
        dv_strides = dv_out.stride() if split > 1 else (0, *dv.stride())
        launcher(kb.attention_bwd_dkdv)[(kv_blocks * B * Hkv * split,)](
            q, k, v, do, lse, delta, dk_out, dv_out,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk_strides, *dv_strides,
            Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * (group // split) * Sq * D * q.element_size(), kv_blocks),
            split, BLOCK_M=cfg.block_m1, BLOCK_N=cfg.block_n1, num_warps=cfg.num_warps_kv, **common,
        )
    if split > 1:
        sum_head_slices(dk_out, dv_out, dk, dv)
    if gluon and ws.WS_BWD == "all" and dq.stride(3) == 1:
        ws.launch_dq(q, k, v, do, lse, delta, dq, causal, scale)
    else:
        _launch_dq(q, k, v, do, lse, delta, dq, causal, scale, cfg, common)


def sum_head_slices(dk_parts: torch.Tensor, dv_parts: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor) -> None:
    """dk, dv (B, Hkv, Skv, D, any strides) = the sums over axis 0 of the head-split dK/dV kernels'
    contiguous fp32 partials (split, B, Hkv, Skv, D), in a fixed order (deterministic), in one launch."""
    split, B, Hkv, Skv, D = dk_parts.shape
    rows = B * Hkv * Skv
    block_r = 16 if INTERPRET else 32
    launcher(kb.attention_bwd_split_sum)[(cdiv(rows, block_r), 2)](
        dk_parts, dv_parts, dk, dv, rows * D, split, rows, *dk.stride(), *dv.stride(), Hkv, Skv,
        HEAD_D=D, BLOCK_R=block_r, BLOCK_D=block_d(D), num_warps=4,
    )


def _launch_dq(q, k, v, do, lse, delta, dq, causal: bool, scale: float, cfg: BwdConfig, common: dict) -> None:
    B, Hq, Sq, D, Hkv, Skv = dims(q, k)
    q_programs = cdiv(Sq, cfg.block_m2) * (Hq // Hkv)
    launcher(kb.attention_bwd_dq)[(q_programs * B * Hkv,)](
        q, k, v, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * Skv * D * k.element_size(), q_programs),
        BLOCK_M=cfg.block_m2, BLOCK_N=cfg.block_n2, num_warps=cfg.num_warps_q, **common,
    )
