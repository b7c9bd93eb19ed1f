"""LayerNorm / RMSNorm launch rules: which kernel, tile, warps and grid a shape gets (ops/norm.py launches
them; the byte model is in norm_traffic.py). Every rule's constant carries the measurement that set it;
sweeps and tests set these module attributes, which the rules read per call.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from ..kernels import norm as kf
from ..kernels import norm_bwd as kb
from ..runtime import INTERPRET
from ._launch import cdiv, device_props, is_wrap_triton_enabled, next_pow2

# Widest row the one-pass forward keeps in registers: 32k fp32 values is 32 per thread at 32 warps.
# Beyond it the looped kernel streams the row twice (the second read mostly from L2).
MAX_FUSED_N_FWD = 32768
# The backward holds h, dy and the weight per element, about twice the forward's live registers.
MAX_FUSED_N_BWD = 16384
# Chunk of a wide row the looped kernels handle per step; the backward takes BLOCK_R rows at once.
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
LOOP_BWD_BLOCK_N = 1024
# Rows a looped-backward program takes, for 16-bit data (wider elements: proportionally fewer, so that the
# pipelined stages fit shared memory: sm_90 builds of the worst case, add_* with dh_out, 3 stages: bf16
# 16 rows 140 KB, fp32 8 rows 200 KB, fp32 16 rows 265 KB, over the 227 KB a program may have).
LOOP_BWD_BLOCK_R = 16
LOOP_BWD_WIDEST_BLOCK_R = 8  # rows wider than LOOP_BWD_BLOCK_R_MAX_N
LOOP_BWD_BLOCK_R_MAX_N = 32768
LOOP_BWD_STAGES = 3
LOOP_BWD_WARPS = 8
# Rows of 12k-16k (BLOCK_N 16384) spill in the one-pass backward (ptxas: 120-208 B at 32 warps), which
# holds the whole row and its column sums in registers. LayerNorm takes the looped kernel past
# FUSED_BWD_LN_MAX_N; RMSNorm (one column sum fewer) only where the row fills at most 3/4 of its tile.
# H100, bf16, device time, best of three alternating rounds (scripts/ab_norm.py wide), one-pass ->
# looped (16 rows a program, 3 stages): LN 4096x12288 475.6 -> 208.8 us, 4096x16384 529.6 -> 271.7,
# bias-LN 396.6 -> 239.8 / 480.1 -> 307.4; rms 4096x12288 198.7 -> 188.1, add_rms 226.6 -> 216.6; but
# rms 4096x16384 225.6 -> 245.1, add_rms 269.6 -> 285.4. The looped kernel itself, 8 -> 16 rows and
# 1 -> 3 stages: LN 2048x32768 345.8 -> 274.6, bias-LN 528.3 -> 303.2; at 65536 8 rows and 3 stages
# were best (LN 1024x65536 404.7 -> 345.1, 385.5 with 16 rows). 16 warps were slower everywhere.
FUSED_BWD_LN_MAX_N = 8192
# Elements one program of the one-pass kernels aims to hold: several short rows at once, so narrow
# rows (N = 512) still move enough bytes per program to hide memory latency. H200 sweep (scripts/
# sweep_norm.py, bf16): the forward at 2048 matched or beat 4096 everywhere (LN 32768x2048 3.84 vs 3.66
# TB/s, 8192x512 1.56 vs 1.46); the backward at 2048 for rows up to 1024 wide (LN 8192x512 0.58 vs 0.39),
# and 8192 (two rows at N = 4096) where it runs one program per SM (LN 16384x4096 2.90 vs 2.79).
TILE_ELEMS_FWD = 2048
TILE_ELEMS_BWD = 4096
TILE_ELEMS_BWD_NARROW = 2048
BWD_NARROW_N = 1024
TILE_ELEMS_BWD_ONE_PER_SM = 8192
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
# One-pass forward: build without the row / column masks where M is a multiple of the tile's rows and N
# its width (kernels/norm.py EVEN_M, EVEN_N), as torch.compile's static-shape kernels are.
FWD_EVEN_MASKS = True
# Backward programs per SM (persistent grid). The partial buffer has one row per program, so this
# also sizes the second-stage reduction: small enough that narrow shapes pay no latency floor.
BWD_PROGRAMS_PER_SM = 2
# One program per SM once the row vectors kept across the loop (weight, input bias, column sums) reach
# this many elements, or rows reach BWD_WIDE_N: the registers then allow one program, not two (H200:
# LN 16384x4096, three vectors, 2.77 TB/s with one, 2.58 with two; bias-LN there re-reads two of its
# five vectors and runs best with two programs, 3.00 against 2.55).
BWD_ONE_PER_SM_VECTOR_ELEMS = 12288
BWD_RELOAD_MIN_TILES_PER_PROGRAM = 8
# Issue the next tile's loads before the current tile's reductions (kernels/norm_bwd.py).
BWD_PREFETCH = True
# fp32 row vectors (weight, input bias, column-sum accumulators) times BLOCK_N the backward keeps in
# registers across its loop; beyond it, weight and input bias are re-read per tile. H200 sweep
# (scripts/sweep_norm.py wide, bias-LN with all three sums): re-reading won at N = 4096 (2.95 vs
# 2.43 TB/s) and N = 8192 (2.95 vs 2.59).
BWD_KEEP_VECTOR_ELEMS = 12288
# 16-bit rows narrower than BWD_WIDE_N with more vectors than that (bias-LN: weight, input bias, three
# sums; bias-RMS: four): one program per SM, two rows a tile, twice the threads, all kept. H100, bf16,
# device time, best of three alternating rounds (scripts/ab_norm.py bwd4k): bias-LN 4096^2 40.9 -> 39.0 us
# against two programs per SM re-reading weight and input bias.
BWD_KEEP_VECTOR_ELEMS_ONE_PER_SM = 20480
# LayerNorm: instead of the register prefetch, the loop's loads pipelined through shared memory, this
# many stages (1: the register prefetch). H100, bf16 backward, device time, best of three alternating
# rounds (scripts/ab_norm.py stages), register prefetch -> 3 stages: LN 8192^2 161.1 -> 148.6 us,
# bias-LN 162.2 -> 151.8; LN 16384x4096 153.9 -> 147.9; bias-LN 32768x2048 154.9 -> 151.1; LN 4096^2
# 48.4 -> 46.8; LN 8192x512 37.8 -> 34.6; LN 32768x2048 level (148.0 / 148.8). 2 stages is slower than
# either, 4 no better than 3. RMSNorm keeps the register prefetch: rms 16384x4096 144.9 vs 148.8 with
# stages, add_rms 187.9 vs 191.3, 4096^2 level.
BWD_STAGES_LN = 3
# Rows up to this wide: the backward's column sums accumulate whole tiles, reduced over their rows once
# after the loop (kernels/norm_bwd.py ACC_ROWS), not per tile, where each column sum is a cross-warp
# reduction over the tile's rows. H100, device time, best of 4-5 alternating rounds (scripts/ab_norm.py
# narrow-bwd, acc-rows), per tile -> after the loop: fp16 8192x512 LN 34.0 -> 18.2 us, bias-LN 43.7 ->
# 20.2, rms 23.5 -> 16.4, add_rms 27.5 -> 20.0 (torch.compile 32.5 / 40.4 / 24.9 / 28.0); bf16 2048x512
# LN 15.6 -> 13.3; fp32 8192x512 level (LN 23.0 / 22.9). At N = 1024 level in bf16 (16384x1024 LN 40.7 /
# 40.8) and slower in fp32 (bias-LN 4096x1024 22.5 -> 23.2), so not taken there.
BWD_ACC_ROWS_MAX_N = 512
# 16-bit rows of 513-1024 on large inputs (at least this many elements): three programs per SM, not
# BWD_PROGRAMS_PER_SM. H100, bf16, as above: 16384x1024 LN 40.7 -> 38.0 us, bias-LN 42.0 -> 38.3, rms
# 42.9 -> 39.1, add_rms 56.8 -> 50.5. Slower on small inputs (4096x768 LN 14.9 -> 15.3), at N = 512
# (fp16 8192x512 with ACC_ROWS: LN 18.2 -> 19.4, bias-LN 20.2 -> 21.8), at N = 2048 (32768x2048 LN
# 140.4 -> 152.4) and in fp32 (bias-LN 4096x1024 22.5 -> 22.8).
BWD_PROGRAMS_PER_SM_1K = 3
BWD_PROGRAMS_PER_SM_1K_MIN_ELEMS = 1 << 24
# Prefetch only below this width: at N = 16384 it spilled (1.15 TB/s without, less with).
BWD_PREFETCH_MAX_N = 8192
# LayerNorm backward: both row sums in one two-value reduction (H200: 16384x4096 2.90 vs 2.77 TB/s,
# 32768x2048 3.15 vs 2.88, never slower in scripts/sweep_norm.py bwd).
BWD_PAIRED_SUMS = True
# Wide rows: one persistent program per SM (bias-LN 8192x8192: 2.95 TB/s against 2.63 with two).
BWD_WIDE_N = 8192
# The interpreter runs programs one after another: a few programs, several tiles each, exercises the
# persistent loop without slowing the tests.
INTERPRET_PROGRAMS = 4
# The column-sum reduction: BLOCK_C columns per program, BLOCK_P partial rows per step. It is latency
# bound (a few MB, mostly in L2): narrow column blocks give more programs, and 256 rows a step read the
# whole partial buffer of a persistent grid (<= 2 programs per SM) in one or two loads. Launched as a
# programmatic dependent launch (sm_90+, eager only): its programs start while the row kernel runs and
# wait in griddepcontrol.wait, so the kernel boundary's latency overlaps. H100, bf16 backward, device
# time (scripts/ab_norm.py colsum, best of three alternating rounds), (128 columns, 32 rows) -> (32, 256) + PDL:
# LN 4096^2 52.2 -> 48.1 us, bias-LN 56.7 -> 50.2, rms 51.0 -> 46.4, LN 8192^2 164.7 -> 160.4, LN
# 16384x4096 158.5 -> 155.2, rms 150.0 -> 144.5, LN 8192x512 44.9 -> 37.4; PDL alone, -1 to +3 us.
COLSUM_BLOCK_C = 32
COLSUM_BLOCK_P = 256
COLSUM_WARPS = 4
BWD_COLSUM_PDL = True


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


@dataclass(frozen=True)
class BwdPlan:
    rows: RowsConfig
    programs: int
    reload_vecs: bool  # re-read weight / input bias per tile instead of keeping them in registers


def bwd_plan(m: int, n: int, vectors: int, elem_size: int, device: torch.device) -> BwdPlan:
    """The one-pass backward's tile, persistent grid and register policy.

    vectors: the fp32 row vectors its loop would keep (weight, input bias, one accumulator per column sum);
    elem_size: bytes per element of h and dy.
    """
    block_n = next_pow2(max(int(n), 1))
    keep_all = vectors * block_n <= BWD_KEEP_VECTOR_ELEMS
    if not keep_all and elem_size <= 2 and block_n < BWD_WIDE_N:
        keep_all = vectors * block_n <= BWD_KEEP_VECTOR_ELEMS_ONE_PER_SM
    if block_n >= BWD_WIDE_N or (keep_all and vectors * block_n >= BWD_ONE_PER_SM_VECTOR_ELEMS):
        rows, per_sm = rows_config(n, TILE_ELEMS_BWD_ONE_PER_SM), 1
    else:
        tile = TILE_ELEMS_BWD_NARROW if block_n <= BWD_NARROW_N else TILE_ELEMS_BWD
        rows, per_sm = rows_config(n, tile), BWD_PROGRAMS_PER_SM
        if elem_size <= 2 and block_n == BWD_NARROW_N and int(m) * int(n) >= BWD_PROGRAMS_PER_SM_1K_MIN_ELEMS:
            per_sm = BWD_PROGRAMS_PER_SM_1K
    tiles = cdiv(int(m), rows.block_m)
    programs = persistent_programs(device, tiles, per_sm)
    # Past the budget, re-reading pays except for 16-bit data with few tiles per program (H200, bias-LN
    # with three column sums: bf16 8192x8192 2.96 TB/s re-reading vs 2.62 keeping, 4096x4096 49 vs 63 us;
    # bf16 512x8192, four tiles a program, 0.95 TB/s keeping vs under 0.44; fp32 512x8192 45 us
    # re-reading vs 133 keeping, whose prefetched fp32 tiles then spill).
    reload = not keep_all and (elem_size > 2 or tiles >= BWD_RELOAD_MIN_TILES_PER_PROGRAM * programs)
    return BwdPlan(rows, programs, reload)


def persistent_programs(device: torch.device, tiles: int, per_sm: int) -> int:
    """A persistent grid: per_sm programs per SM, never more programs than tiles."""
    if INTERPRET or device.type != "cuda":
        cap = INTERPRET_PROGRAMS
    else:
        cap = per_sm * device_props(device.index if device.index is not None else 0)[1]
    return max(1, min(tiles, cap))


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


@dataclass(frozen=True)
class BwdLaunch:
    """The backward's row kernel, its grid and its launch constants (the tensors' flags aside)."""
    kernel: object
    programs: int
    meta: dict


def bwd_launch(m: int, n: int, vectors: int, elem_size: int, is_rms: bool, device: torch.device,
               max_fused_n: int | None = None, num_programs: int | None = None) -> BwdLaunch:
    """The one-pass kernel (bwd_plan's tile and grid) or the looped one, as ops.norm.norm_bwd_into launches it.

    vectors and elem_size as for bwd_plan; max_fused_n and num_programs override the widest one-pass row
    and the persistent grid (tests, sweeps)."""
    max_fused_n = MAX_FUSED_N_BWD if max_fused_n is None else max_fused_n
    if n <= max_fused_n and not _looped_bwd_pays(n, is_rms):
        plan = bwd_plan(m, n, vectors, elem_size, device)
        cfg = plan.rows
        # 16-bit data only: fp32 stages would double the shared memory and can halve the persistent
        # grid's programs per SM (not measured).
        piped = not is_rms and elem_size == 2 and cfg.block_n <= BWD_PREFETCH_MAX_N
        stages = BWD_STAGES_LN if piped else 1
        meta = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n,
                "PREFETCH": stages == 1 and BWD_PREFETCH and cfg.block_n <= BWD_PREFETCH_MAX_N,
                "STAGES": stages, "RELOAD_VECS": plan.reload_vecs, "PAIRED_SUMS": BWD_PAIRED_SUMS,
                "ACC_ROWS": cfg.block_n <= BWD_ACC_ROWS_MAX_N, "num_warps": cfg.num_warps}
        return BwdLaunch(kb.norm_bwd_rows, num_programs or plan.programs, meta)
    block_r = min(looped_bwd_rows(n, elem_size), next_pow2(int(m)))
    meta = {"BLOCK_R": block_r, "BLOCK_N": min(LOOP_BWD_BLOCK_N, next_pow2(max_fused_n)),
            "STAGES": LOOP_BWD_STAGES, "num_warps": LOOP_BWD_WARPS}
    return BwdLaunch(kb.norm_bwd_looped, cdiv(m, block_r), meta)


def looped_bwd_rows(n: int, elem_size: int) -> int:
    """BLOCK_R of the looped backward: LOOP_BWD_BLOCK_R (or _WIDEST_) rows of 16-bit data, fewer for wider."""
    rows = LOOP_BWD_BLOCK_R if n <= LOOP_BWD_BLOCK_R_MAX_N else LOOP_BWD_WIDEST_BLOCK_R
    return max(1, rows * 2 // elem_size)


def _looped_bwd_pays(n: int, is_rms: bool) -> bool:
    """Rows the one-pass backward could hold but the looped kernel runs faster (see FUSED_BWD_LN_MAX_N)."""
    if not is_rms:
        return n > FUSED_BWD_LN_MAX_N
    block_n = next_pow2(n)
    return block_n > FUSED_BWD_LN_MAX_N and 4 * n <= 3 * block_n


def colsum_pdl_ok(device: torch.device) -> bool:
    """Programmatic dependent launch: sm_90+, compiled, eager (torch.compile launches the kernels itself)."""
    if not BWD_COLSUM_PDL or INTERPRET or device.type != "cuda" or is_wrap_triton_enabled():
        return False
    return device_props(device.index if device.index is not None else 0)[0][0] >= 9
