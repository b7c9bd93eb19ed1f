"""LayerNorm / RMSNorm forward launch rules, and the row tiles both directions share: which kernel, tile and
warps a shape gets (ops/norm.py launches them; the backward's rules are in norm_bwd_configs.py, the byte model
in norm_traffic.py). Every rule's constant carries the measurement that set it; sweeps and tests set these
module attributes, which the rules read per call.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import NamedTuple

from ..kernels import norm as kf
from ._launch import cdiv, next_pow2

# Widest row the one-pass forward keeps in registers: 32k fp32 values is 32 per thread at 32 warps.
# Beyond it the looped kernel streams the row twice (the second read mostly from L2).
MAX_FUSED_N_FWD = 32768
# Chunk of a wide row the looped forward handles per step.
LOOP_BLOCK_N = 4096
LOOP_FWD_STAGES = 1  # 3 was slower everywhere (scripts/ab_norm.py wide-fwd: LN 4096x12288 97.7 vs 85.1 us)
LOOP_FWD_WARPS = 16
# The looped forward's statistics summed per lane over the chunks and reduced once (kernels/norm.py
# ACC_LANES), and its L2 eviction hints (evict-last on the first read, evict-first on the second).
LOOP_FWD_ACC_LANES = False
LOOP_FWD_L2_HINTS = False
# With LOOP_FWD_ACC_LANES: rows of at most this many chunks get both loops unrolled (kernels/norm.py
# CHUNKS), a build per chunk count, so all of a row's loads are issued at once (0: never unrolled).
LOOP_FWD_UNROLL_MAX_CHUNKS = 0
# fp32 rows of 4097-8192 with a residual on small inputs: the looped kernel as Inductor builds it there
# (2048-element chunks, both loops unrolled, per-lane sums, L2 hints, 16 warps at 32 registers: four programs
# an SM, so 512 rows run in one wave, where the one-pass kernel's 32 warps fit two). H100, device time,
# best of 5 alternating rounds (scripts/ab_norm.py fwd-miss), add_rms 512x8192 fp32: one-pass 21.9 us ->
# 21.0 (torch.compile 21.0, Liger 21.5); without the hints 22.3, 4096-element chunks 22.9, 8 warps 21.1.
# Not for 16-bit data (add_rms 8192^2 bf16 176.4 -> 181.4); larger fp32 inputs unmeasured, so excluded.
FWD_LOOPED_RES_FP32_N = (4096, 8192)
FWD_LOOPED_RES_FP32_MAX_ELEMS = 1 << 22
FWD_LOOPED_RES_FP32_BLOCK_N = 2048
FWD_LOOPED_RES_FP32_WARPS = 16
# LayerNorm's forward (no residual) over rows of 8k-16k: the looped kernel beats the one-pass one, whose
# 16k tile wastes a quarter of its lanes at 12288 and makes two reductions over it. H100, bf16, device
# time, best of three alternating rounds (scripts/ab_norm.py wide-fwd), one-pass -> looped: LN 4096x12288
# 112.8 -> 85.1 us, 4096x16384 124.9 -> 114.5, bias-LN 117.0 -> 89.3 / 129.2 -> 120.1. Not at 32768 (LN
# 100.5 -> 129.8), nor for RMSNorm (rms 4096x12288 73.3 -> 77.1, add_rms 139.7 -> 143.2).
FWD_LOOPED_LN_N = (8192, 16384)
# Elements one program of the one-pass kernels aims to hold: several short rows at once, so narrow
# rows (N = 512) still move enough bytes per program to hide memory latency. H200 sweep (scripts/
# sweep_norm.py, bf16): the forward at 2048 matched or beat 4096 everywhere (LN 32768x2048 3.84 vs 3.66
# TB/s, 8192x512 1.56 vs 1.46); the backward's tiles are in norm_bwd_configs.py.
TILE_ELEMS_FWD = 2048
# fp32 values per thread the one-pass kernels aim for: enough loads in flight, no spilling.
ELEMS_PER_THREAD = 16
# LayerNorm's forward makes two dependent cross-warp reductions (mean, then variance): on large inputs
# fewer, fuller threads per row cut their cost (H200, bf16: 8192x8192 3.74 vs 3.48 TB/s, 32768x2048
# +3%), but cost 2-7% below FWD_LN_FULL_THREADS_MIN_ELEMS elements (512x8192 fp32, 4096x4096), where
# the grid is a wave or two. RMSNorm's single reduction is 0.3-0.6% faster at 16 everywhere.
ELEMS_PER_THREAD_FWD_LN = 32
FWD_LN_FULL_THREADS_MIN_ELEMS = 1 << 25
# Narrow rows (BLOCK_N <= FWD_NARROW_N): more rows per program, 32 values a thread. H200, scripts/
# sweep_norm.py small (device time), 8192x512 fp16 / bf16: LN 1.64 / 1.62 TB/s vs 1.52 / 1.53 with the
# 2048-element tiles, RMS 1.82 / 1.81 vs 1.67 / 1.69, add_rms 2.58 / 2.61 vs 2.46 / 2.45.
FWD_NARROW_N = 1024
FWD_NARROW_TILE_ELEMS = 8192
FWD_NARROW_ELEMS_PER_THREAD = 32
# Narrow rows without a residual: 2048-element tiles at 2 warps (32 values a thread, under rows_config's
# 4-warp floor), which the H200 sweep above could not try. H100, device time, best of 5 alternating rounds
# (scripts/ab_norm.py narrow-fwd), 16 rows at 8 warps -> 4 rows at 2 warps, 8192x512 fp16: LN 9.5 -> 8.9 us,
# bias-LN 10.8 -> 9.0 (torch.compile with static shapes 9.3 / 9.1), rms 8.7 -> 8.8 (level; compile 8.1);
# 16384x1024 bf16, 8 rows at 8 warps -> 2 rows at 1 warp / 4 rows at 2: LN 25.4 -> 22.4 / 22.8, bias-LN
# 25.4 -> 22.9 / 23.0 (compile 21.8 / 22.1). With a residual the 8192-element tiles stay (add_rms 12.7
# against 13.2 us). Measured at 512 and 1024 wide, 16-bit; narrower rows and fp32 take it unmeasured.
FWD_NARROW_NORES_TILE_ELEMS = 2048
FWD_NARROW_NORES_WARPS = 2
# Rows 257-512 wide without a residual: two rows a program on one warp, weight and bias read with x, as
# torch.compile's kernel (XBLOCK 2, one warp) does: no cross-warp reduction, no second memory round trip
# after it. H100, device time, best of 5 alternating rounds (scripts/ab_norm.py narrow-fwd2), 4 rows at
# 2 warps -> this, 8192x512: fp16 LN 9.1 -> 8.9 us, bias-LN 9.1 -> 8.5, rms 9.0 -> 8.4 (compile 9.1 / 9.1
# / 8.2); bf16 LN 9.0 -> 8.8, rms 8.6 -> 8.3 (compile 9.2 / 8.3). Without early reads one warp is no
# faster (rms 9.0); at N = 1024 it is slower (bf16 16384x1024 rms 21.4 -> 21.9). Measured at 512 wide,
# 16-bit; fp32 and rows of 257-511 take it unmeasured.
FWD_ONE_WARP_N = 512
FWD_ONE_WARP_TILE_ELEMS = 1024
# The same rows with a residual: one row a program on one warp, the weight read with x. H100, device time,
# best of 7 alternating rounds (scripts/ab_norm.py narrow-res), add_rms, 8192-element tiles -> this: 8192x512
# fp16 12.9 -> 12.5 us, bf16 12.8 -> 12.5, fp32 23.9 -> 21.3 (torch.compile 13.0 / 13.0 / 22.5); 4096x512
# fp16 8.5 -> 8.6, bf16 9.0 -> 8.4; 16384x512 and 32768x512 level (21.6, 43.4). Two rows a program: between.
FWD_ONE_WARP_RES_TILE_ELEMS = 512
# With a residual each thread loads two inputs per element: more threads, fewer values each (H200, add_rms:
# 512x8192 fp32 3.08 vs 2.96 TB/s, 16384x4096 3.97 vs 3.95, 8192^2 3.99 vs 3.95, 32768x2048 4.10 vs 4.08).
FWD_RES_ELEMS_PER_THREAD = 8
# LayerNorm with a row a program up to 4096 wide: weight and bias read before x, so their latency hides
# behind x's rather than stalling each program between its reductions and its store. H100, device time,
# best of three alternating rounds, GB/s late -> early (bf16): 2048x4096 1856 -> 1903, 4096x2048 1872 ->
# 1956, 4096^2 2297 -> 2346, 16384x4096 2797 -> 2843, 32768x2048 2803 -> 2826. Not at 8192-wide rows:
# 512x8192 fp32 1824 -> 1675, 8192^2 2780 -> 2495 (a one-dimensional one-row kernel did no better there);
# nor for RMSNorm, one vector: -4% to +2%. Other tiles keep the late reads (see _normalize_store).
FWD_EARLY_PARAMS = True
FWD_EARLY_PARAMS_MAX_N = 4096
# fp32 rows of (4096, FWD_FP32_EARLY_N] without a residual or input bias: 8 warps (32 values a thread),
# weight / bias read with x. H100, device time, best of 5 alternating rounds (scripts/ab_norm.py fp32-fwd),
# 16 warps late -> this: LN 512x8192 15.7 -> 14.1 us, 1024x8192 24.3 -> 23.0, 8192^2 178.1 -> 176.6,
# 1024x6000 20.4 -> 18.7; RMS 1024x8192 23.1 -> 22.5, 1024x6000 19.1 -> 17.8, 512 to 8192 rows level
# or better. With an input bias it spills (bias-LN 1024x8192 24.5 -> 32.0): excluded. At 16 warps the
# early reads cost programs per SM (LN 512x8192 16.4 us).
FWD_FP32_EARLY_N = 8192
FWD_FP32_EARLY_WARPS = 8
# RMSNorm over rows of (4096, FWD_FP32_EARLY_N], any dtype, no residual or input bias: 4 warps with the
# weight read with x. H100, best of 5 alternating rounds (scripts/ab_norm.py fp32-rows, bf16-rows, fwd-8k):
# fp32 (8 warps early ->) 512x8192 13.8 -> 13.2 us, 1024x8192 22.2 -> 21.6 (torch.compile 13.1 / 22.6,
# Liger 13.5 / 22.4); bf16 (16 warps late ->) 8192^2 88.3 -> 87.4 and 87.8 -> 87.4, 4096x8192 43.9 -> 43.4
# (torch.compile 86.7 / 42.7, Liger 87.8 / 43.6). LayerNorm at 4 warps: fp32 15.0 / 22.9 against 14.4 /
# 22.7 at 8; bf16 8192^2 89.3 against 89.9 (level, not taken).
FWD_RMS_EARLY_WARPS = 4
# fp32 LayerNorm rows of (4096, FWD_FP32_EARLY_N] with an input bias on small inputs: 32 warps (8 values a
# thread, 32 registers: two programs an SM, 64 warps) against 16 (40 registers: three programs, 48 warps).
# H100, device time, best of 5 alternating rounds (scripts/ab_norm.py ib-fp32-regs), 16 -> 32 warps:
# bias-LN 512x8192 15.3 -> 14.8 us (torch.compile 14.8), but 1024x8192 23.5 -> 23.9 and 2048x8192 44.9 ->
# 45.2 (compile 25.1 / 47.4), so only up to 2^22 elements; 16 warps capped at 32 registers (four programs
# an SM, 24 B spilled) 15.9, two rows a program at 32 warps 15.8.
FWD_IB_FP32_WARPS = 32
FWD_IB_FP32_MAX_ELEMS = 1 << 22
# One-pass forward: build without the row / column masks where M is a multiple of the tile's rows and N
# its width (kernels/norm.py EVEN_M, EVEN_N), as torch.compile's static-shape kernels are.
FWD_EVEN_MASKS = True
@dataclass(frozen=True)
class RowsConfig:
    block_m: int
    block_n: int
    num_warps: int
    early_params: bool = False  # forward: read weight and bias before x (FWD_EARLY_PARAMS)


def rows_config(n: int, tile_elems: int, elems_per_thread: int | None = None) -> RowsConfig:
    """BLOCK_N = next power of two of N; BLOCK_M short rows per program up to tile_elems elements."""
    # int(n): a SymInt under torch.compile, and constexprs must be concrete.
    return _rows_config(int(n), tile_elems, elems_per_thread or ELEMS_PER_THREAD)


@functools.cache
def _rows_config(n: int, tile_elems: int, elems_per_thread: int) -> RowsConfig:
    block_n = next_pow2(max(n, 1))
    block_m = max(1, min(64, tile_elems // block_n))
    num_warps = max(4, min(32, block_m * block_n // (32 * elems_per_thread)))
    return RowsConfig(block_m, block_n, num_warps)


def fwd_config(m: int, n: int, is_rms: bool, has_residual: bool, elem_size: int = 2,
               has_input_bias: bool = False) -> RowsConfig:
    """elem_size: bytes per element of x."""
    block_n = next_pow2(max(int(n), 1))
    if block_n <= FWD_NARROW_N:
        if has_residual and block_n == FWD_ONE_WARP_N and FWD_ONE_WARP_RES_TILE_ELEMS:
            return _with_early_params(_with_warps(rows_config(n, FWD_ONE_WARP_RES_TILE_ELEMS), 1))
        if has_residual:
            return rows_config(n, FWD_NARROW_TILE_ELEMS, FWD_NARROW_ELEMS_PER_THREAD)
        if block_n == FWD_ONE_WARP_N:
            return _with_early_params(_with_warps(rows_config(n, FWD_ONE_WARP_TILE_ELEMS), 1))
        return _with_warps(rows_config(n, FWD_NARROW_NORES_TILE_ELEMS), FWD_NARROW_NORES_WARPS)
    if has_residual:
        return rows_config(n, TILE_ELEMS_FWD, FWD_RES_ELEMS_PER_THREAD)
    if not has_input_bias and FWD_EARLY_PARAMS_MAX_N < block_n <= FWD_FP32_EARLY_N and (is_rms or elem_size == 4):
        warps = FWD_RMS_EARLY_WARPS if is_rms else FWD_FP32_EARLY_WARPS
        return _with_early_params(rows_config(n, TILE_ELEMS_FWD, block_n // (32 * warps)))
    if (has_input_bias and not is_rms and elem_size == 4 and FWD_EARLY_PARAMS_MAX_N < block_n <= FWD_FP32_EARLY_N
            and int(m) * int(n) <= FWD_IB_FP32_MAX_ELEMS):
        return rows_config(n, TILE_ELEMS_FWD, block_n // (32 * FWD_IB_FP32_WARPS))
    full = not is_rms and int(m) * int(n) >= FWD_LN_FULL_THREADS_MIN_ELEMS
    cfg = rows_config(n, TILE_ELEMS_FWD, ELEMS_PER_THREAD_FWD_LN if full else None)
    if FWD_EARLY_PARAMS and not is_rms and cfg.block_m == 1 and cfg.block_n <= FWD_EARLY_PARAMS_MAX_N:
        return _with_early_params(cfg)
    return cfg


@functools.cache
def _with_warps(cfg: RowsConfig, num_warps: int) -> RowsConfig:
    """rows_config's tile at num_warps, below its 4-warp floor if asked (memoized as _with_early_params)."""
    return replace(cfg, num_warps=num_warps)


@functools.cache
def _with_early_params(cfg: RowsConfig) -> RowsConfig:
    # Memoized like _rows_config: fwd_config runs on every forward call, and replace() costs ~1-2 us.
    return replace(cfg, early_params=True)


def _looped_meta(n: int, block_n: int, acc_lanes: bool, unroll_max_chunks: int, l2_hints: bool,
                 warps: int) -> dict:
    """norm_fwd_looped's launch constants: rows of at most unroll_max_chunks chunks (with acc_lanes) unrolled."""
    chunks = cdiv(int(n), block_n)
    unrolled = acc_lanes and chunks <= unroll_max_chunks
    return {"BLOCK_N": block_n, "STAGES": LOOP_FWD_STAGES, "ACC_LANES": acc_lanes,
            "CHUNKS": chunks if unrolled else 0, "EVEN_N": unrolled and n == chunks * block_n,
            "L2_HINTS": l2_hints, "num_warps": warps}


class FwdLaunch(NamedTuple):
    """The forward's kernel, its grid and its launch constants (the tensors' flags aside). takes_m: the
    one-pass kernel takes M (its last tile may be ragged); the looped one runs one program a row. A named
    tuple: built on every forward call, where a frozen dataclass's __init__ costs about a microsecond."""
    kernel: object
    grid: tuple
    meta: dict
    takes_m: bool


def fwd_launch(m: int, n: int, is_rms: bool, has_residual: bool, elem_size: int, has_input_bias: bool,
               max_fused_n: int | None = None) -> FwdLaunch:
    """The one-pass kernel (fwd_config's tile) or the looped one, as norm_fwd_into launches it.

    max_fused_n overrides the widest one-pass row (tests, sweeps)."""
    max_fused_n = MAX_FUSED_N_FWD if max_fused_n is None else max_fused_n  # read per call: sweeps set it
    looped_ln = not is_rms and not has_residual and FWD_LOOPED_LN_N[0] < n <= FWD_LOOPED_LN_N[1]
    if (has_residual and elem_size == 4 and FWD_LOOPED_RES_FP32_N[0] < n <= FWD_LOOPED_RES_FP32_N[1]
            and int(m) * int(n) <= FWD_LOOPED_RES_FP32_MAX_ELEMS):
        block_n = FWD_LOOPED_RES_FP32_BLOCK_N  # unrolled up to the rule's widest row
        meta = _looped_meta(n, block_n, acc_lanes=True, unroll_max_chunks=cdiv(FWD_LOOPED_RES_FP32_N[1], block_n),
                            l2_hints=True, warps=FWD_LOOPED_RES_FP32_WARPS)
        return FwdLaunch(kf.norm_fwd_looped, (m,), meta, False)
    if n <= max_fused_n and not looped_ln:
        cfg = fwd_config(m, n, is_rms, has_residual, elem_size, has_input_bias)
        even = FWD_EVEN_MASKS  # the masks a shape's tile never needs fold away (one more build per case)
        meta = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "EARLY_PARAMS": cfg.early_params,
                "EVEN_M": even and bool(m % cfg.block_m == 0), "EVEN_N": even and n == cfg.block_n,
                "num_warps": cfg.num_warps}
        return FwdLaunch(kf.norm_fwd_rows, (cdiv(m, cfg.block_m),), meta, True)
    meta = _looped_meta(n, min(LOOP_BLOCK_N, next_pow2(max_fused_n)), LOOP_FWD_ACC_LANES,
                        LOOP_FWD_UNROLL_MAX_CHUNKS, LOOP_FWD_L2_HINTS, LOOP_FWD_WARPS)
    return FwdLaunch(kf.norm_fwd_looped, (m,), meta, False)


