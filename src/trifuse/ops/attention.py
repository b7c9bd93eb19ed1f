"""Flash attention launchers: config heuristics, destination-passing launches, the FLOP model.

Tuning hooks (GPU sweeps without editing code): TRIFUSE_ATTN_FWD="block_m,block_n,warps,stages" and
TRIFUSE_ATTN_BWD="m1,n1,m2,n2,warps_kv,warps_q,stages" override the heuristics when set; a `config=`
argument on the launchers overrides both.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton

from ..kernels import attention_bwd as kb
from ..kernels import attention_fwd as kf
from ..runtime import INTERPRET
from ._launch import cdiv, device_props, launcher, next_pow2

SUPPORTED_HEAD_DIMS = (32, 64, 96, 128, 256)
# The Gluon kernel is written against triton 3.6's API (list-of-(function, args) warp_specialize).
WS_TRITON = tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 6)
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
    """Programs per (key block, KV head): 1 unless causal GQA with fewer than DKDV_SPLIT_BELOW programs;
    then the smallest divisor of the group size that brings the grid to DKDV_TARGET_PROGRAMS (else the
    whole group, one query head a program)."""
    if not causal or programs >= DKDV_SPLIT_BELOW:
        return 1
    for split in range(1, group + 1):
        if group % split == 0 and programs * split >= DKDV_TARGET_PROGRAMS:
            return split
    return group


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


# The warp-specialized Gluon forward (kernels/attention_fwd_ws.py): 64 query rows per consumer warpgroup,
# two warpgroups a program, key blocks of WS_BLOCK_N through a ring of ws_stages(D) stages. H100, bf16,
# device time, best of three alternating rounds (scripts/ab_attention.py time), TFLOP/s:
# - one program a tile, Triton kernel -> this one at 2 / 3 stages, D=128 non-causal: 465 -> 506 / 596
#   (8x16x2048), 507 -> 560 / 645 (4096), 535 -> 600 / 659 (16384); causal 373 -> 437 / 489, 440 -> 506 /
#   588, 513 -> 556 / 679; cuDNN 651 / 676 / 675 and 509 / 573 / 634.
# - persistent (the next tile's loads overlap this one's tail and stores) against one program a tile, two
#   runs: non-causal 399-402 / 343-347 (32x16x512), 503-509 / 468 (1024), 583-590 / 565 (2048), 628-638 /
#   622-625 (4096), 645-657 / 651-668 (16384); causal much slower (2048: 348-406 / 436-443; 16384: 439-466
#   / 658-664): a static assignment of tiles of unequal length, round-robin or snake, leaves programs with
#   unequal work where the hardware's block scheduler balances it. So: persistent without causal only.
# - D=64 (4 stages), persistent non-causal / one program a tile causal: 8x32x2048 410 vs the Triton
#   kernel's 402, causal 301 vs 352; 2x32x8192 449 vs 426, causal 427 vs 403: causal D=64 takes the kernel
#   from WS_MIN_SKV_D64 keys on.
WS_Q_ROWS = 64
WS_BLOCK_N = 128
WS_REGS = (240, 32)  # consumer warpgroup, producer warp (setmaxnreg): 8 x 240 + 4 x 32 warps' registers = 64K
WS_MAXNREG = 168  # at launch: 12 warps (4 + 4 + the producer's warpgroup) x 32 x 168 fits the register file
WS_HEAD_DIMS = (64, 128)
WS_MIN_SKV_D64 = 4096
# Short query blocks (decode-like) keep the Triton kernel, whose 64-row tiles waste less of them; so do small
# problems: this kernel's launch (Triton's launcher with descriptor arguments) costs more host time than the
# Triton kernel's FastKernel launch. H100 host, enqueue time a causal call, this kernel / the Triton one:
# 108-118 / 45-50 us (1x16x128x128 to 4x16x2048x128); wall time a call in a loop at 1x16x512x128 111 / 47 us
# (host-bound), at 4x16x2048x128 160 / 181 us. WS_MIN_FLOPS (the FLOP model's count, ~60 us of device time)
# keeps the kernel where its device time outlasts the difference.
WS_MIN_SQ = 128
WS_MIN_FLOPS = 2 ** 35


def ws_stages(head_dim: int) -> int:
    # Shared memory: Q (2 x 64 x D) plus a K and a V block per stage: 224 KB at D=128, 144 KB at D=64.
    return 3 if head_dim > 64 else 4


def ws_desc(t: torch.Tensor, rows: int):
    """A host descriptor of t (B, H, S, D) for [1, 1, rows, D] tiles, built without the dataclass's checks
    (ws_applies has checked what they check)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    block = (1, 1, rows, int(t.shape[3]))
    desc = object.__new__(TensorDescriptor)
    desc.base, desc.shape, desc.strides = t, list(t.shape), list(t.stride())
    desc.block_shape, desc.layout, desc.padding = list(block), _ws_layout(block, t.dtype), "zero"
    return desc


def rows_desc(t: torch.Tensor, rows: int):
    """A 1-D host descriptor of a contiguous fp32 t (any shape, 16-byte aligned) for [rows] boxes."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    desc = object.__new__(TensorDescriptor)
    desc.base, desc.shape, desc.strides = t, [t.numel()], [1]
    desc.block_shape, desc.padding = [rows], "zero"
    desc.layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1)
    return desc


@functools.cache
def _ws_layout(block: tuple[int, ...], dtype: torch.dtype):
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout.get_default_for(list(block), gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


def ws_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, scale: float,
               causal: bool) -> bool:
    """Whether the forward goes to the warp-specialized Gluon kernel: a problem it takes (ws_fits) on an
    sm_90 GPU (not the interpreter) with triton >= 3.6, real tensors (not traced: torch.compile's wrap_triton
    takes Triton kernels, not Gluon ones), q, k, v that TMA can address (tma_addressable) and an out with a
    unit last stride."""
    if INTERPRET or not WS_TRITON or not ws_fits(q.dtype, *_dims(q, k), causal, scale):
        return False
    if q.device.type != "cuda" or device_props(q.device.index)[0] != (9, 0):
        return False
    if torch.compiler.is_compiling() or type(q) is not torch.Tensor:
        return False
    return out.stride(3) == 1 and all(tma_addressable(t) for t in (q, k, v))


def ws_fits(dtype: torch.dtype, B: int, Hq: int, Sq: int, D: int, Hkv: int, Skv: int, causal: bool,
            scale: float) -> bool:
    """The problems the Gluon forward takes: 16-bit data, a positive scale (folded into exp2), D of 128 or
    64 (causal: from WS_MIN_SKV_D64 keys on), at least WS_MIN_SQ queries and WS_MIN_FLOPS of work."""
    if dtype not in (torch.float16, torch.bfloat16) or not scale > 0 or D not in WS_HEAD_DIMS:
        return False
    if Sq < WS_MIN_SQ or (D == 64 and causal and Skv < WS_MIN_SKV_D64):
        return False
    return attention_flops(int(B), int(Hq), int(Sq), int(Skv), D, causal) >= WS_MIN_FLOPS


def tma_addressable(t: torch.Tensor) -> bool:
    """A (B, H, S, D) tensor a 4-D TMA descriptor can read: unit last stride, 16-byte aligned base and other
    strides (16-bit data)."""
    st = t.stride()
    return st[3] == 1 and t.data_ptr() % 16 == 0 and all(x % 8 == 0 for x in st[:3])



def _dims(q: torch.Tensor, k: torch.Tensor):
    B, Hq, Sq, D = q.shape
    # D becomes a constexpr: concrete even when torch.compile hands SymInts.
    return B, Hq, Sq, int(D), k.shape[1], k.shape[2]


def attention_fwd_into(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                       lse: torch.Tensor, causal: bool, scale: float, config: FwdConfig | None = None) -> None:
    """q (B, Hq, Sq, D), k/v (B, Hkv, Skv, D), any strides; writes out (B, Hq, Sq, D) and the natural-log
    LSE (B, Hq, Sq) fp32, contiguous."""
    B, Hq, Sq, D, Hkv, Skv = _dims(q, k)
    if B * Hq * Sq == 0:
        return
    if Skv == 0:  # nothing to attend to: SDPA's math returns zeros
        out.zero_()
        lse.fill_(float("-inf"))
        return
    if config is None and ws_applies(q, k, v, out, scale, causal):
        _launch_fwd_ws(q, k, v, out, lse, causal, scale)
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


def _launch_fwd_ws(q, k, v, out, lse, causal: bool, scale: float, persistent: bool | None = None) -> None:
    """persistent: min(tiles, SMs) programs; by default without causal only (see WS_Q_ROWS's note)."""
    from ..kernels import attention_fwd_ws as kw

    B, Hq, Sq, D, Hkv, Skv = _dims(q, k)
    unit_programs = cdiv(Sq, 2 * WS_Q_ROWS) * (Hq // Hkv)
    tiles = unit_programs * B * Hkv
    if persistent is None:
        persistent = not causal
    programs = min(tiles, device_props(q.device.index)[1]) if persistent else tiles
    kw.attention_fwd_ws[(programs,)](
        ws_desc(q, WS_Q_ROWS), ws_desc(k, WS_BLOCK_N), ws_desc(v, WS_BLOCK_N), out, lse, *out.stride()[:3],
        Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * Skv * D * k.element_size(), unit_programs), tiles,
        CAUSAL=causal, STAGES=ws_stages(D), PERSISTENT=persistent, CONSUMER_REGS=WS_REGS[0], PRODUCER_REGS=WS_REGS[1], num_warps=4,
        maxnreg=WS_MAXNREG,
    )


# EXPERIMENTAL, off (WS_BWD = False): the warp-specialized Gluon backward kernels (kernels/attention_bwd_ws.py),
# built for sm_90 offline but not yet run on a GPU; scripts/ab_attention.py bwd-check / bwd-time switch them
# on. WS_BWD = True: the Gluon dK/dV kernel (64-row query blocks, WS_BWD_STAGES of Q, dO, LSE and delta in
# the ring) with the Triton dQ kernel; "all": the Gluon dQ kernel too (WS_DQ_BLOCK_N keys a step).
WS_BWD: bool | str = False
WS_BWD_BLOCK_M = 64
WS_BWD_STAGES = 2


def ws_bwd_applies(q, k, v, do, lse, dk, dv, scale: float) -> bool:
    """The Gluon dK/dV kernel's conditions (when WS_BWD is on): as ws_applies's, without the size rules,
    for q, k, v, do, with dk and dv of a unit last stride and a contiguous, 16-byte aligned lse."""
    if INTERPRET or not WS_TRITON or q.dtype not in (torch.float16, torch.bfloat16) or not scale > 0:
        return False
    if int(q.shape[3]) not in WS_HEAD_DIMS or q.device.type != "cuda" or device_props(q.device.index)[0] != (9, 0):
        return False
    if torch.compiler.is_compiling() or type(q) is not torch.Tensor:
        return False
    # lse is read through a 1-D descriptor (delta is this function's caller's own buffer).
    if not lse.is_contiguous() or lse.data_ptr() % 16:
        return False
    return dk.stride(3) == 1 and dv.stride(3) == 1 and all(tma_addressable(t) for t in (q, k, v, do))


def _launch_dkdv_ws(q, k, v, do, lse, delta, dk, dv, causal: bool, scale: float) -> None:
    """dK, dV of attention_bwd_into through the Gluon kernel (EXPERIMENTAL, see above); delta as
    attention_bwd_delta writes it. q, k, v, do TMA-addressable; dk, dv with a unit last stride."""
    from ..kernels import attention_bwd_ws as kw

    B, Hq, Sq, D, Hkv, Skv = _dims(q, k)
    key_blocks = cdiv(Skv, 128)
    chunk = lpt_chunk(causal, 2 * (Hq // Hkv) * Sq * D * q.element_size(), key_blocks)
    kw.attention_bwd_dkdv_ws[(key_blocks * B * Hkv,)](
        ws_desc(q, WS_BWD_BLOCK_M), ws_desc(do, WS_BWD_BLOCK_M), ws_desc(k, 64), ws_desc(v, 64),
        rows_desc(lse, WS_BWD_BLOCK_M), rows_desc(delta, WS_BWD_BLOCK_M), dk, dv, *dk.stride()[:3], *dv.stride()[:3], Hq, Hkv, Sq, Skv, scale, chunk,
        CAUSAL=causal, STAGES=WS_BWD_STAGES, CONSUMER_REGS=WS_REGS[0], PRODUCER_REGS=WS_REGS[1], num_warps=4,
        maxnreg=WS_MAXNREG,
    )


WS_DQ_BLOCK_N = 64
WS_DQ_STAGES = 3


def _launch_dq_ws(q, k, v, do, lse, delta, dq, causal: bool, scale: float) -> None:
    """dQ of attention_bwd_into through the Gluon kernel (EXPERIMENTAL, with the dK/dV one above)."""
    from ..kernels import attention_bwd_ws as kw

    B, Hq, Sq, D, Hkv, Skv = _dims(q, k)
    unit_programs = cdiv(Sq, 128) * (Hq // Hkv)
    kw.attention_bwd_dq_ws[(unit_programs * B * Hkv,)](
        ws_desc(q, 64), ws_desc(do, 64), ws_desc(k, WS_DQ_BLOCK_N), ws_desc(v, WS_DQ_BLOCK_N), lse, delta, dq,
        *dq.stride()[:3], Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * Skv * D * k.element_size(), unit_programs),
        CAUSAL=causal, STAGES=WS_DQ_STAGES, CONSUMER_REGS=WS_REGS[0], PRODUCER_REGS=WS_REGS[1], num_warps=4,
        maxnreg=WS_MAXNREG,
    )


def attention_bwd_into(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                       lse: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, causal: bool,
                       scale: float, config: BwdConfig | None = None) -> None:
    """Gradients of attention_fwd_into. do/q/k/v/out any strides; lse as the forward wrote it; writes dq,
    dk, dv (any strides). Deterministic: no atomics anywhere."""
    B, Hq, Sq, D, Hkv, Skv = _dims(q, k)
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
    if WS_BWD and ws_bwd_applies(q, k, v, do, lse, dk, dv, scale):
        _launch_dkdv_ws(q, k, v, do, lse, delta, dk, dv, causal, scale)
        if WS_BWD == "all" and dq.stride(3) == 1:
            _launch_dq_ws(q, k, v, do, lse, delta, dq, causal, scale)
        else:
            _launch_dq(q, k, v, do, lse, delta, dq, causal, scale, cfg, common)
        return
    group = Hq // Hkv
    kv_blocks = cdiv(Skv, cfg.block_n1)
    split = dkdv_head_split(group, kv_blocks * B * Hkv, causal)
    if split > 1:  # fp32 partials, one per head slice; separate buffers (mutated arguments must not alias)
        dk_out = dk.new_empty(split, B, Hkv, Skv, D, dtype=torch.float32)
        dv_out = dv.new_empty(split, B, Hkv, Skv, D, dtype=torch.float32)
        dk_strides, dv_strides = dk_out.stride(), dv_out.stride()
    else:
        dk_out, dv_out = dk, dv
        dk_strides, dv_strides = (0, *dk.stride()), (0, *dv.stride())
    launcher(kb.attention_bwd_dkdv)[(kv_blocks * B * Hkv * split,)](
        q, k, v, do, lse, delta, dk_out, dv_out,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk_strides, *dv_strides,
        Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * (group // split) * Sq * D * q.element_size(), kv_blocks),
        split, BLOCK_M=cfg.block_m1, BLOCK_N=cfg.block_n1, num_warps=cfg.num_warps_kv, **common,
    )
    if split > 1:
        dk.copy_(dk_out.sum(0))  # a fixed-order reduction: deterministic
        dv.copy_(dv_out.sum(0))
    _launch_dq(q, k, v, do, lse, delta, dq, causal, scale, cfg, common)


def _launch_dq(q, k, v, do, lse, delta, dq, causal: bool, scale: float, cfg: BwdConfig, common: dict) -> None:
    B, Hq, Sq, D, Hkv, Skv = _dims(q, k)
    q_programs = cdiv(Sq, cfg.block_m2) * (Hq // Hkv)
    launcher(kb.attention_bwd_dq)[(q_programs * B * Hkv,)](
        q, k, v, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * Skv * D * k.element_size(), q_programs),
        BLOCK_M=cfg.block_m2, BLOCK_N=cfg.block_n2, num_warps=cfg.num_warps_q, **common,
    )


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
