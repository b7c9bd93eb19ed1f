"""A/B of norm backward variants on the GPU: device time at the launcher level, variants alternating within
each of three rounds, best per variant; every variant's dx and dweight are checked against the first one's.

  python3 scripts/ab_norm.py colsum   # the column-sum kernel's tile and its programmatic dependent launch
  python3 scripts/ab_norm.py stages   # register prefetch against loads pipelined through shared memory
  python3 scripts/ab_norm.py bwd4k        # 4096^2 backward: programs per SM, tile, re-reading, column sums
  python3 scripts/ab_norm.py small-fwd    # the suite's small forward cases: threads per row, tile
  python3 scripts/ab_norm.py fp32-fwd     # fp32 8192-wide rows: 8 warps and early weight / bias reads
  python3 scripts/ab_norm.py bwd-keep     # bias-LN / bias-RMS at N = 4096: one program per SM keeping vectors
  python3 scripts/ab_norm.py fp32-rows    # fp32 8192-wide one-row forward: warps x early reads, all kinds
  python3 scripts/ab_norm.py bf16-rows    # bf16 one-row forward at the suite's large shapes: warps x early reads
  python3 scripts/ab_norm.py fwd-8k       # 8192-wide bf16 forward: one-pass against the looped (two-read) kernel
  python3 scripts/ab_norm.py narrow-fwd   # rows <= 1024 wide: rows a program x warps (x early reads)
  python3 scripts/ab_norm.py narrow-bwd   # rows <= 1024 wide: column sums per tile or after the loop, tiles
  python3 scripts/ab_norm.py narrow-fwd2  # one-warp narrow tiles with early weight reads; looped fp32 add_rms
  python3 scripts/ab_norm.py acc-rows     # column sums after the loop: up to which width, programs per SM
  python3 scripts/ab_norm.py bwd-bias4k   # bias-LN / LN backward at 4096^2: threads, stages, column-sum tile
  python3 scripts/ab_norm.py fwd-miss     # the forwards a peer won: looped kernel with per-lane sums, no statistics
  python3 scripts/ab_norm.py narrow-res   # rows of 257-512 with a residual: one-warp tiles
  python3 scripts/ab_norm.py ib-fp32-warps  # bias-LN 8192-wide one-row tiles at 4 / 8 warps, late reads
  python3 scripts/ab_norm.py ib-fp32-regs   # bias-LN 8192-wide fp32: a register cap (four programs an SM), 32 warps

PEERS=1 also times torch.compile and Liger-Kernel (when installed; LN, bias-LN, rms, add_rms) in the same rounds.
"""
# ruff: noqa: B023 - run() is timed before the loop moves on
import dataclasses
import os
import sys

import torch

sys.path.insert(0, "src")
import trifuse.ops.norm_bwd_configs as ob
import trifuse.ops.norm_configs as on
from trifuse.bench import norm as bench_norm
from trifuse.bench.suite import Case, Unavailable
from trifuse.bench.timing import time_ms
from trifuse.library.eager import direct_launch
from trifuse.ops.norm import norm_bwd_into, norm_fwd_into


def _knobs(name: str):
    """The launch-rule module holding a constant: the backward's rules or the forward's (and shared tiles)."""
    return ob if hasattr(ob, name) else on


_FWD_CONFIG = on.fwd_config


def _early_fwd_config(*args):
    """ops.norm_configs.fwd_config, reading weight and bias with x (kernels/norm.py EARLY_PARAMS) on one-row tiles."""
    cfg = _FWD_CONFIG(*args)
    return dataclasses.replace(cfg, early_params=True) if cfg.block_m == 1 else cfg


def _one_row_fwd_config(warps: int, early: bool):
    """ops.norm_configs.fwd_config with one-row tiles forced to `warps` warps and early weight / bias reads on or off."""
    def fwd_config(*args):
        cfg = _FWD_CONFIG(*args)
        if cfg.block_m != 1:
            return cfg
        return dataclasses.replace(cfg, num_warps=warps, early_params=early)
    return fwd_config


_FWD_LAUNCH = on.fwd_launch


def _one_row_launch(warps: int, maxnreg: int = 0, block_m: int = 1):
    """ops.norm_configs.fwd_launch with the one-pass kernel's one-row tiles made block_m rows at `warps` warps,
    under a register cap (maxnreg, 0: none)."""
    def fwd_launch(m, *args, **kwargs):
        launch = _FWD_LAUNCH(m, *args, **kwargs)
        if launch.meta.get("BLOCK_M") != 1:
            return launch
        meta = {**launch.meta, "BLOCK_M": block_m, "EVEN_M": launch.meta["EVEN_M"] and m % block_m == 0,
                "num_warps": warps, **({"maxnreg": maxnreg} if maxnreg else {})}
        return launch._replace(meta=meta, grid=(-(-m // block_m),))
    return fwd_launch


def _narrow_fwd_config(block_m: int, warps: int, early: bool = False):
    """ops.norm_configs.fwd_config with tiles of rows <= 1024 wide forced to block_m rows and `warps` warps."""
    def fwd_config(*args):
        cfg = _FWD_CONFIG(*args)
        if cfg.block_n > 1024:
            return cfg
        return dataclasses.replace(cfg, block_m=block_m, num_warps=warps, early_params=early)
    return fwd_config


# the looped forward on rows wider than 4096, 2048-element chunks, 16 warps (Inductor's choice at 512x8192 fp32)
_LOOP2K = {"MAX_FUSED_N_FWD": 4096, "LOOP_BLOCK_N": 2048, "LOOP_FWD_WARPS": 16}
# the same with per-lane statistics, both loops unrolled and L2 hints: Inductor's looped reduction
_NOSTATS = {"stats": False}
_UNROLL2K = {**_LOOP2K, "LOOP_FWD_ACC_LANES": True, "LOOP_FWD_UNROLL_MAX_CHUNKS": 8, "LOOP_FWD_L2_HINTS": True}

# name -> module attributes of ops/norm_configs.py to set
VARIANTS = {
    "colsum": {
        "c128x32": {"COLSUM_BLOCK_C": 128, "COLSUM_BLOCK_P": 32, "BWD_COLSUM_PDL": False},
        "c128x32+pdl": {"COLSUM_BLOCK_C": 128, "COLSUM_BLOCK_P": 32, "BWD_COLSUM_PDL": True},
        "c32x256": {"COLSUM_BLOCK_C": 32, "COLSUM_BLOCK_P": 256, "BWD_COLSUM_PDL": False},
        "c32x256+pdl": {"COLSUM_BLOCK_C": 32, "COLSUM_BLOCK_P": 256, "BWD_COLSUM_PDL": True},
        "c64x128+pdl": {"COLSUM_BLOCK_C": 64, "COLSUM_BLOCK_P": 128, "BWD_COLSUM_PDL": True},
    },
    "stages": {"reg": {"BWD_STAGES_LN": 1}, "s2": {"BWD_STAGES_LN": 2}, "s3": {"BWD_STAGES_LN": 3},
               "s4": {"BWD_STAGES_LN": 4}},
    "fwd": {"early": {"FWD_EARLY_PARAMS": True}, "late": {"FWD_EARLY_PARAMS": False}},
    "bwd4k": {
        "default": {},
        "one_per_sm": {"BWD_PROGRAMS_PER_SM": 1},
        "two_rows_one_per_sm": {"BWD_WIDE_N": 4096},
        "keep_vectors": {"BWD_RELOAD_MIN_TILES_PER_PROGRAM": 1 << 30},
        "colsum_c64x128": {"COLSUM_BLOCK_C": 64, "COLSUM_BLOCK_P": 128},
        "colsum_c16": {"COLSUM_BLOCK_C": 16},
        "colsum_w8": {"COLSUM_WARPS": 8},
        "ln_stages1": {"BWD_STAGES_LN": 1},
        "two_rows": {"TILE_ELEMS_BWD": 8192},
        "one_per_sm_w16": {"BWD_PROGRAMS_PER_SM": 1, "ELEMS_PER_THREAD": 8},
        "one_per_sm_w16_keep": {"BWD_PROGRAMS_PER_SM": 1, "ELEMS_PER_THREAD": 8,
                                "BWD_RELOAD_MIN_TILES_PER_PROGRAM": 1 << 30},
        "two_rows_one_per_sm_keep": {"BWD_WIDE_N": 4096, "BWD_RELOAD_MIN_TILES_PER_PROGRAM": 1 << 30},
    },
    "bwd-keep": {"keep_one_per_sm": {}, "reread": {"BWD_KEEP_VECTOR_ELEMS_ONE_PER_SM": 0}},
    "fp32-fwd": {"fp32_early_w8": {}, "w16_late": {"FWD_FP32_EARLY_N": 0}},
    "fp32-rows": {"default": {}, **{f"w{w}{'e' if e else 'l'}": {"fwd_config": _one_row_fwd_config(w, e)}
                                    for w in (4, 8, 16, 32) for e in (True, False)}},
    "bf16-rows": {"default": {}, **{f"w{w}{'e' if e else 'l'}": {"fwd_config": _one_row_fwd_config(w, e)}
                                    for w in (4, 8, 16) for e in (True, False)}},
    "fwd-8k": {"default": {}, "w4e": {"fwd_config": _one_row_fwd_config(4, True)},
               "loop4k_w16": {"MAX_FUSED_N_FWD": 4096, "LOOP_BLOCK_N": 4096, "LOOP_FWD_WARPS": 16},
               "loop4k_w8": {"MAX_FUSED_N_FWD": 4096, "LOOP_BLOCK_N": 4096, "LOOP_FWD_WARPS": 8},
               "loop2k_w8": {"MAX_FUSED_N_FWD": 4096, "LOOP_BLOCK_N": 2048, "LOOP_FWD_WARPS": 8},
               "loop2k_w4": {"MAX_FUSED_N_FWD": 4096, "LOOP_BLOCK_N": 2048, "LOOP_FWD_WARPS": 4}},
    "narrow-fwd": {"default": {}, "before_m16w8": {"FWD_NARROW_NORES_TILE_ELEMS": 8192, "FWD_NARROW_NORES_WARPS": 8},
                   **{f"m{m}w{w}": {"fwd_config": _narrow_fwd_config(m, w)}
                      for m, w in ((2, 1), (2, 2), (4, 1), (4, 2), (8, 2), (8, 4))},
                   **{f"m{m}w{w}e": {"fwd_config": _narrow_fwd_config(m, w, True)}
                      for m, w in ((2, 2), (4, 2), (8, 4))}},
    "narrow-bwd": {"default": {}, "tile4k": {"TILE_ELEMS_BWD_NARROW": 4096}, "tile8k": {"TILE_ELEMS_BWD_NARROW": 8192},
                   **{f"acc_rows{name}": {"BWD_ACC_ROWS_MAX_N": 1024, **consts} for name, consts in (
        ("", {}), ("_tile4k", {"TILE_ELEMS_BWD_NARROW": 4096}), ("_tile1k", {"TILE_ELEMS_BWD_NARROW": 1024}),
        ("_3_per_sm", {"BWD_PROGRAMS_PER_SM": 3}), ("_4_per_sm", {"BWD_PROGRAMS_PER_SM": 4}),
        ("_reg_prefetch", {"BWD_STAGES_LN": 1}))}},
    # one warp and early weight reads as Inductor's XBLOCK 2 / 1-warp kernel; Inductor's looped fp32 add_rms
    "narrow-fwd2": {"default": {}, **{f"m{m}w{w}{'e' if e else ''}": {"fwd_config": _narrow_fwd_config(m, w, e)}
                                      for m, w, e in ((2, 1, False), (2, 1, True), (4, 1, True), (1, 1, True),
                                                      (4, 2, True))},
                    "loop2k_w16": {"MAX_FUSED_N_FWD": 4096, "LOOP_BLOCK_N": 2048, "LOOP_FWD_WARPS": 16},
                    "loop4k_w16": {"MAX_FUSED_N_FWD": 4096, "LOOP_BLOCK_N": 4096, "LOOP_FWD_WARPS": 16}},
    # "stats": False runs the inference forward (mean / rstd not written), as the bench's forward does
    "fwd-miss": {"default": _NOSTATS, "stats": {}, "noeven": {**_NOSTATS, "FWD_EVEN_MASKS": False},
                 "unroll2k_hints": {**_UNROLL2K, **_NOSTATS}, "unroll4k_hints": {**_UNROLL2K, **_NOSTATS, "LOOP_BLOCK_N": 4096},
                 "unroll2k": {**_UNROLL2K, **_NOSTATS, "LOOP_FWD_L2_HINTS": False},
                 "unroll2k_hints_w8": {**_UNROLL2K, **_NOSTATS, "LOOP_FWD_WARPS": 8},
                 "loop4096": {**_UNROLL2K, **_NOSTATS, "MAX_FUSED_N_FWD": 2048}},
    # bias-LN fp32 8192-wide one-row tiles: fewer warps, parameters read late (62 registers at 8 warps, 108 at 4:
    # four programs an SM either way, against three at 16 warps' 40)
    "ib-fp32-warps": {"default": _NOSTATS, **{f"w{w}l": {**_NOSTATS, "fwd_config": _one_row_fwd_config(w, False)}
                                              for w in (4, 8)}},
    # bias-LN fp32 8192-wide: 16 warps capped at 32 registers (24 B spill in the sm_90 build; four programs an
    # SM against three at 40), 32 warps (32 registers, two an SM), two rows a program at 32 warps
    "ib-fp32-regs": {"default": _NOSTATS, "w16r32": {**_NOSTATS, "fwd_launch": _one_row_launch(16, 32)},
                     "w32": {**_NOSTATS, "fwd_launch": _one_row_launch(32)},
                     "m2w32": {**_NOSTATS, "fwd_launch": _one_row_launch(32, 0, 2)},
                     "unroll2k_hints": {**_UNROLL2K, **_NOSTATS}},
    # rows of 257-512 with a residual: 8192-element tiles against one or two rows a program on one warp
    "narrow-res": {"default": _NOSTATS, "res_m1w1": {**_NOSTATS, "FWD_ONE_WARP_RES_TILE_ELEMS": 512},
                   "res_m2w1": {**_NOSTATS, "FWD_ONE_WARP_RES_TILE_ELEMS": 1024}},
    "acc-rows": {"off": {}, "acc512": {"BWD_ACC_ROWS_MAX_N": 512}, "acc1024": {"BWD_ACC_ROWS_MAX_N": 1024},
                 "acc2048": {"BWD_ACC_ROWS_MAX_N": 2048}, "off_3_per_sm": {"BWD_PROGRAMS_PER_SM": 3},
                 "acc1024_3_per_sm": {"BWD_ACC_ROWS_MAX_N": 1024, "BWD_PROGRAMS_PER_SM": 3}},
    "bwd-bias4k": {"default": {}, "ept8": {"ELEMS_PER_THREAD": 8}, "ept32": {"ELEMS_PER_THREAD": 32},
                   "ln_stages1": {"BWD_STAGES_LN": 1}, "ln_stages2": {"BWD_STAGES_LN": 2},
                   "colsum_c64x128": {"COLSUM_BLOCK_C": 64, "COLSUM_BLOCK_P": 128}},
    "small-fwd": {
        "default": {},
        "early_params": {"fwd_config": _early_fwd_config},
        "ept32": {"ELEMS_PER_THREAD": 32, "FWD_NARROW_ELEMS_PER_THREAD": 64, "FWD_RES_ELEMS_PER_THREAD": 16},
        "ept32_early": {"ELEMS_PER_THREAD": 32, "FWD_NARROW_ELEMS_PER_THREAD": 64, "FWD_RES_ELEMS_PER_THREAD": 16,
                        "fwd_config": _early_fwd_config},
        "tile4k": {"TILE_ELEMS_FWD": 4096},
    },
    "wide-fwd": {
        "rows": {"MAX_FUSED_N_FWD": 32768, "FWD_LOOPED_LN_N": (0, 0)},  # the one-pass kernel up to 32k
        "loop": {"MAX_FUSED_N_FWD": 8192, "LOOP_BLOCK_N": 4096, "LOOP_FWD_STAGES": 1, "LOOP_FWD_WARPS": 16},
        "loop_s3": {"MAX_FUSED_N_FWD": 8192, "LOOP_BLOCK_N": 4096, "LOOP_FWD_STAGES": 3, "LOOP_FWD_WARPS": 16},
        "loop2k_s3_w8": {"MAX_FUSED_N_FWD": 8192, "LOOP_BLOCK_N": 2048, "LOOP_FWD_STAGES": 3, "LOOP_FWD_WARPS": 8},
        "loop2k_s4_w8": {"MAX_FUSED_N_FWD": 8192, "LOOP_BLOCK_N": 2048, "LOOP_FWD_STAGES": 4, "LOOP_FWD_WARPS": 8},
    },
    "wide": {
        "rows": {"MAX_FUSED_N_BWD": 16384, "FUSED_BWD_LN_MAX_N": 16384},  # the one-pass kernel up to 16k
        "loop_r8": {"MAX_FUSED_N_BWD": 8192, "LOOP_BWD_BLOCK_R": 8, "LOOP_BWD_STAGES": 1},
        "loop_r8_s3": {"MAX_FUSED_N_BWD": 8192, "LOOP_BWD_BLOCK_R": 8, "LOOP_BWD_STAGES": 3},
        "loop_r16_s3": {"MAX_FUSED_N_BWD": 8192, "LOOP_BWD_BLOCK_R": 16, "LOOP_BWD_STAGES": 3},
        "loop_r16_s3_w16": {"MAX_FUSED_N_BWD": 8192, "LOOP_BWD_BLOCK_R": 16, "LOOP_BWD_STAGES": 3,
                            "LOOP_BWD_WARPS": 16},
    },
}
CASES = [("LN", 4096, 4096), ("biasLN", 4096, 4096), ("rms", 4096, 4096), ("add_rms", 4096, 4096),
         ("LN", 8192, 8192), ("biasLN", 8192, 8192), ("rms", 8192, 8192), ("LN", 16384, 4096),
         ("biasLN", 16384, 4096), ("rms", 16384, 4096), ("add_rms", 16384, 4096), ("LN", 32768, 2048),
         ("biasLN", 32768, 2048), ("LN", 8192, 512), ("rms", 8192, 512)]
WIDE_CASES = [(k, m, n) for k in ("LN", "biasLN", "rms", "add_rms")
              for m, n in ((4096, 12288), (4096, 16384), (2048, 32768), (1024, 65536))]
FWD_CASES = [(k, m, n, torch.bfloat16) for k in ("LN", "biasLN", "rms", "add_rms")
             for m, n in ((4096, 4096), (16384, 4096), (8192, 8192), (32768, 2048), (8192, 512))]
FWD_CASES += [("LN", 512, 8192, torch.float32), ("rms", 512, 8192, torch.float32)]
SMALL_FWD_CASES = [(k, 512, 8192, torch.float32) for k in ("LN", "rms", "add_rms")]
SMALL_FWD_CASES += [(k, 8192, 512, torch.float16) for k in ("LN", "rms", "add_rms")]
BWD_KEEP_CASES = [(k, m, 4096, torch.bfloat16) for k in ("biasLN", "biasRMS") for m in (1024, 4096, 16384)]
BWD_KEEP_CASES += [(k, 4096, 3000, torch.bfloat16) for k in ("biasLN", "biasRMS")]
FP32_FWD_CASES = [(k, m, 8192, torch.float32) for k in ("LN", "rms", "biasLN")
                  for m in (512, 1024, 2048, 4096, 8192)]
FP32_FWD_CASES += [(k, 1024, 6000, torch.float32) for k in ("LN", "rms")]
BF16 = torch.bfloat16
FP32_ROWS_CASES = [(k, m, 8192, torch.float32) for k in ("LN", "rms", "add_rms", "biasLN") for m in (512, 1024)]
BF16_ROWS_CASES = [("LN", 16384, 4096, BF16), ("LN", 4096, 4096, BF16), ("LN", 32768, 2048, BF16),
                   ("rms", 8192, 8192, BF16), ("rms", 16384, 4096, BF16), ("LN", 8192, 8192, BF16)]
FWD_8K_CASES = [("rms", 8192, 8192, BF16), ("rms", 4096, 8192, BF16), ("LN", 8192, 8192, BF16),
                ("add_rms", 8192, 8192, BF16)]
NARROW_FWD_CASES = [(k, 8192, 512, torch.float16) for k in ("LN", "biasLN", "rms", "add_rms")]
NARROW_FWD_CASES += [("LN", 16384, 1024, BF16), ("biasLN", 16384, 1024, BF16), ("rms", 16384, 1024, BF16),
                     ("LN", 8192, 512, BF16), ("rms", 8192, 512, BF16)]
NARROW_BWD_CASES = [(k, 8192, 512, torch.float16) for k in ("LN", "biasLN", "rms", "add_rms")]
NARROW_BWD_CASES += [("LN", 8192, 512, BF16), ("biasLN", 16384, 1024, BF16), ("LN", 16384, 1024, BF16)]
ACC_ROWS_CASES = [(k, 8192, 512, torch.float32) for k in ("LN", "biasLN", "rms")]
ACC_ROWS_CASES += [("LN", 2048, 512, BF16), ("LN", 4096, 768, BF16), ("biasLN", 4096, 1024, torch.float32)]
ACC_ROWS_CASES += [(k, 16384, 1024, BF16) for k in ("LN", "biasLN", "rms", "add_rms")]
ACC_ROWS_CASES += [(k, 32768, 2048, BF16) for k in ("LN", "biasLN", "rms", "add_rms")]
NARROW_FWD2_CASES = NARROW_FWD_CASES + [("add_rms", 512, 8192, torch.float32), ("rms", 512, 8192, torch.float32)]
BWD_BIAS4K_CASES = [(k, 4096, 4096, BF16) for k in ("biasLN", "LN", "biasRMS")]
FWD_MISS_CASES = [(k, 512, 8192, torch.float32) for k in ("add_rms", "rms", "LN", "biasLN")]
FWD_MISS_CASES += [(k, 8192, 8192, BF16) for k in ("rms", "LN", "add_rms")]
FWD_MISS_CASES += [(k, 16384, 4096, BF16) for k in ("rms", "LN", "add_rms")]
FWD_MISS_CASES += [("rms", 8192, 512, torch.float16), ("add_rms", 8192, 512, torch.float16), ("rms", 8192, 512, BF16),
                   ("LN", 4096, 4096, BF16)]
NARROW_RES_CASES = [(k, m, 512, dt) for k in ("add_rms",) for m in (8192, 4096, 16384, 32768)
                    for dt in (torch.float16, BF16)] + [("add_rms", 8192, 512, torch.float32), ("add_rms", 8192, 300, BF16)]
IB_FP32_WARPS_CASES = [("biasLN", m, 8192, torch.float32) for m in (512, 1024, 2048, 4096, 8192)]
IB_FP32_WARPS_CASES += [("biasLN", 1024, 6000, torch.float32), ("biasLN", 512, 8192, BF16), ("biasLN", 8192, 8192, BF16)]
IB_FP32_REGS_CASES = [("biasLN", m, 8192, torch.float32) for m in (512, 1024, 2048)] + [("LN", 512, 8192, torch.float32)]
BWD4K_CASES = [(k, 4096, 4096, torch.bfloat16) for k in ("LN", "biasLN", "rms", "add_rms")]


BENCH_KIND = {"LN": "layer_norm", "biasLN": "bias_layer_norm", "rms": "rms_norm", "add_rms": "add_rms_norm"}


def _peers(kind: str, m: int, n: int, dtype: torch.dtype, direction: str) -> dict:
    """name -> timed call of torch.compile and Liger-Kernel (bench/norm.py's providers on the bench's own
    inputs of this shape), those available."""
    case = Case((m, n), dtype, direction, (("kind", BENCH_KIND[kind]),))
    inp = bench_norm.inputs(case, "cuda")
    out = {}
    for name, build in bench_norm.providers(case).items():
        if name in ("compile", "liger"):
            try:
                out[name] = build(inp)
            except Unavailable as e:
                print(f"  {name}: {e}")
    return out


def main(which: str) -> None:
    variants = VARIANTS[which]
    defaults = {k: getattr(_knobs(k), k) for v in variants.values() for k in v if k != "stats"}
    cases = {"fwd": FWD_CASES, "small-fwd": SMALL_FWD_CASES, "bwd4k": BWD4K_CASES, "fp32-fwd": FP32_FWD_CASES,
             "bwd-keep": BWD_KEEP_CASES, "fp32-rows": FP32_ROWS_CASES,
             "bf16-rows": BF16_ROWS_CASES, "bwd-bias4k": BWD_BIAS4K_CASES, "fwd-8k": FWD_8K_CASES,
             "narrow-fwd": NARROW_FWD_CASES, "narrow-bwd": NARROW_BWD_CASES, "acc-rows": ACC_ROWS_CASES, "narrow-fwd2": NARROW_FWD2_CASES,
             "fwd-miss": FWD_MISS_CASES, "narrow-res": NARROW_RES_CASES,
             "ib-fp32-warps": IB_FP32_WARPS_CASES, "ib-fp32-regs": IB_FP32_REGS_CASES,
             "wide-fwd": [(*c, torch.bfloat16) for c in WIDE_CASES],
             "wide": [(*c, torch.bfloat16) for c in WIDE_CASES]}.get(which, [(*c, torch.bfloat16) for c in CASES])
    fwd = which in ("ib-fp32-regs", "ib-fp32-warps", "narrow-res", "fwd-miss", "narrow-fwd2", "fwd", "wide-fwd", "small-fwd", "fp32-fwd", "fp32-rows", "bf16-rows", "fwd-8k", "narrow-fwd")
    for kind, m, n, dtype in cases:
        x = torch.randn(m, n, device="cuda", dtype=dtype)
        dy, dho = torch.randn_like(x), torch.randn_like(x)
        w, ib = torch.randn(n, device="cuda", dtype=x.dtype), torch.randn(n, device="cuda", dtype=x.dtype)
        mean, rstd = torch.randn(m, device="cuda"), torch.rand(m, device="cuda") + 0.5
        dx, dw, db, dib = torch.empty_like(x), torch.empty_like(w), torch.empty_like(w), torch.empty_like(w)
        rms, use_ib, use_dho = kind in ("rms", "add_rms", "biasRMS"), kind in ("biasLN", "biasRMS"), kind == "add_rms"

        def run():
            norm_bwd_into(dy, dho if use_dho else None, x, ib if use_ib else None, w, None if rms else mean,
                             rstd, rms, dx, dw, None if rms else db, dib if use_ib else None)

        def run_fwd():  # dx holds y, dw is unused, dho the residual, db the bias, dy h
            stats = variant_stats[0]
            norm_fwd_into(x, w, None if rms else db, ib if use_ib else None, dho if use_dho else None, 1e-5,
                          rms, dx, dy if use_dho else None, None if rms or not stats else mean,
                          rstd if stats else None)

        variant_stats = [True]

        nbytes = (3 + use_dho) * m * n * x.element_size()
        if fwd:
            run, nbytes = run_fwd, (2 + 2 * use_dho) * m * n * x.element_size()
            db.normal_()
        times, ref = {}, None
        peers = _peers(kind, m, n, dtype, "fwd" if fwd else "bwd") if os.environ.get("PEERS") else {}
        for _ in range(int(os.environ.get("ROUNDS", "3"))):
            for name, consts in variants.items():
                for k, v in {**defaults, **consts}.items():  # a constant one variant sets must not leak into the next
                    if k != "stats":
                        setattr(_knobs(k), k, v)
                variant_stats[0] = consts.get("stats", True)
                with direct_launch():
                    dx.fill_(float("nan"))
                    dw.fill_(float("nan"))
                    if fwd:  # an output of the forward, an input of the backward
                        rstd.fill_(float("nan"))
                    run()
                    got = (dx.float(), rstd.clone()) if fwd else (dx.float(), dw.float())
                    if not variant_stats[0]:
                        got = got[:1]  # rstd is not written
                    ref = ref or tuple(t.clone() for t in got)
                    err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, ref))
                    if not err < 1e-2:
                        nans = [int(t.isnan().sum()) for t in (*got, *ref)]
                        print(f"  MISMATCH {name}: {err:.3g}, NaNs in outputs / reference {nans}")
                    times.setdefault(name, []).append(time_ms(run, hide_host=True))
            for name, fn in peers.items():
                times.setdefault(name, []).append(time_ms(fn, hide_host=True))
        for k, v in defaults.items():
            setattr(_knobs(k), k, v)
        row = " ".join(f"{name} {min(t) * 1e3:.1f}us ({nbytes / min(t) / 3e9:.1%})" for name, t in times.items())
        print(f"{kind} {m}x{n}: {row}   (% of 3.0 TB/s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "stages")
