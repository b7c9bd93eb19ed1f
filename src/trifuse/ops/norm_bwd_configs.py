"""LayerNorm / RMSNorm backward launch rules: which kernel, tile, persistent grid and register policy a shape
gets, and the column-sum reduction's (ops/norm.py launches them; the row tiles come from norm_configs.py's
rows_config). Every rule's constant carries the measurement that set it; sweeps and tests set these module
attributes, which the rules read per call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import norm_bwd as kb
from ..runtime import INTERPRET
from ._launch import cdiv, device_props, is_wrap_triton_enabled, next_pow2
from .norm_configs import RowsConfig, rows_config

# The backward holds h, dy and the weight per element, about twice the forward's live registers.
MAX_FUSED_N_BWD = 16384
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
# Elements one program of the one-pass backward aims to hold (as TILE_ELEMS_FWD). H200 sweep (scripts/
# sweep_norm.py, bf16): 2048 for rows up to 1024 wide (LN 8192x512 0.58 vs 0.39 TB/s), and 8192 (two rows
# at N = 4096) where it runs one program per SM (LN 16384x4096 2.90 vs 2.79).
TILE_ELEMS_BWD = 4096
TILE_ELEMS_BWD_NARROW = 2048
BWD_NARROW_N = 1024
TILE_ELEMS_BWD_ONE_PER_SM = 8192
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
