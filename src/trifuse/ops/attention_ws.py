"""The warp-specialized Gluon attention kernels' host side (sm_90): when a call takes them, their tiles and
descriptors, their launches. The forward is chosen by ws_applies, the backward's dK/dV by ws_bwd_applies;
the Gluon dQ kernel is EXPERIMENTAL and opt-in (WS_BWD = "all")."""
from __future__ import annotations

import functools

import torch

from ..runtime import INTERPRET
from ._gluon import GLUON_API, descriptor
from ._launch import cdiv, device_props, eager_launcher
from .attention_plan import attention_flops, dims, head_split, lpt_chunk

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
#   unequal work where the hardware's block scheduler balances it.
# - the dynamic schedule (a persistent grid taking tiles from an atomic counter, longest first) against one
#   program a tile and round-robin (session 10, scripts/ab_attention.py time): causal 445 / 412 -> 489
#   (8x16x2048), 550 / 470 -> 589 (4096), 625 / 502 -> 645 (8192), 674 / 446 -> 681 (16384), 8:1 448 / 374
#   -> 493 (2048), 631 / 589 -> 653 (8192); non-causal at or above round-robin everywhere (600 -> 604 at
#   2048, 659 -> 668 at 16384; D=64 419 -> 423, 453 -> 459). So: dynamic for every call.
# - D=64 (4 stages), persistent non-causal / one program a tile causal: 8x32x2048 410 vs the Triton
#   kernel's 402, causal 301 vs 352; 2x32x8192 449 vs 426, causal 427 vs 403: causal D=64 takes the kernel
#   from WS_MIN_SKV_D64 keys on.
# - O stored through each warpgroup's Q buffer and a TMA store, against 4-byte stores from the MMA layout
#   (seventeenth session, an A/B timed as scripts/ab_attention.py times, its probe mode not kept; TFLOP/s):
#   non-causal / causal 32x16x512 412 -> 449 / 240 -> 274, 16x16x1024 516 -> 547 / 357 -> 396, 8x16x2048
#   596 -> 617 / 484 -> 515, 4x16x4096 636 -> 650 / 577 -> 603, 1x16x16384 666 -> 672 / 670 -> 678, 8:1 GQA
#   2048 605 -> 626 / 497 -> 527, D=64 8x32x2048 424 -> 424 / 347 -> 354; skipping the stores altogether
#   (a probe) gave 498 / 257 ... 637 / 526 at 2048.
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
    """A host descriptor of t (B, H, S, D) for [1, 1, rows, D] tiles (the callers' rules have checked what
    the dataclass checks)."""
    return descriptor(t, (1, 1, rows, int(t.shape[3])))


def rows_desc(t: torch.Tensor, rows: int):
    """A 1-D host descriptor of a contiguous fp32 t (any shape, 16-byte aligned) for [rows] boxes."""
    return descriptor(t, (rows,), shape=(t.numel(),), strides=(1,), layout=_fp32_rows_layout())


@functools.cache
def _fp32_rows_layout():
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1)


def ws_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, scale: float,
               causal: bool) -> bool:
    """Whether the forward goes to the warp-specialized Gluon kernel: a problem it takes (ws_fits) on an
    sm_90 GPU (not the interpreter) with triton >= 3.6, real tensors (not traced: torch.compile's wrap_triton
    takes Triton kernels, not Gluon ones), and q, k, v and out that TMA can address (tma_addressable: out is
    written by TMA stores)."""
    if not ws_fits(q.dtype, *dims(q, k), causal, scale) or not _gluon_runs(q):
        return False
    return all(tma_addressable(t) for t in (q, k, v, out))


def _gluon_runs(q: torch.Tensor) -> bool:
    """A Gluon kernel can take this call: an sm_90 GPU (not the interpreter), triton >= 3.6, a real tensor
    (not traced: torch.compile's wrap_triton takes Triton kernels, not Gluon ones)."""
    if INTERPRET or not GLUON_API or q.device.type != "cuda" or device_props(q.device.index)[0] != (9, 0):
        return False
    return not torch.compiler.is_compiling() and type(q) is torch.Tensor


def ws_fits(dtype: torch.dtype, B: int, Hq: int, Sq: int, D: int, Hkv: int, Skv: int, causal: bool,
            scale: float) -> bool:
    """The problems the Gluon forward takes: _gluon_problem's, D = 64 causal from WS_MIN_SKV_D64 keys on,
    at least WS_MIN_SQ queries, and _pays_launch."""
    if not _gluon_problem(dtype, D, scale):
        return False
    if Sq < WS_MIN_SQ or (D == 64 and causal and Skv < WS_MIN_SKV_D64):
        return False
    return _pays_launch(B, Hq, Sq, D, Skv, causal)


def _gluon_problem(dtype: torch.dtype, D: int, scale: float) -> bool:
    """What every Gluon attention kernel needs: 16-bit data, a positive scale (folded into exp2) and a D of
    WS_HEAD_DIMS."""
    return dtype in (torch.float16, torch.bfloat16) and scale > 0 and D in WS_HEAD_DIMS


def _pays_launch(B: int, Hq: int, Sq: int, D: int, Skv: int, causal: bool) -> bool:
    """At least WS_MIN_FLOPS of work (the FLOP model's): enough device time to hide the launch's host cost."""
    return attention_flops(int(B), int(Hq), int(Sq), int(Skv), D, causal) >= WS_MIN_FLOPS


def tma_addressable(t: torch.Tensor) -> bool:
    """A (B, H, S, D) tensor a 4-D TMA descriptor can read: unit last stride, 16-byte aligned base and other
    strides (16-bit data), none of them 0 over a dim longer than 1 (an expanded gradient, say: a descriptor
    with zero strides faulted in the dK/dV kernel)."""
    st = t.stride()
    return st[3] == 1 and t.data_ptr() % 16 == 0 and all(
        x % 8 == 0 and (x > 0 or n == 1) for x, n in zip(st[:3], t.shape[:3]))


# The forward's tile schedule (kernels/attention_fwd_ws.py): "grid" (one program a tile), "round_robin" or
# "dynamic" (persistent grids of min(tiles, SMs) programs; dynamic takes tiles from an atomic counter).
WS_SCHEDULE = "dynamic"
_SCHEDULES = {"grid": 0, "round_robin": 1, "dynamic": 2}


def _tile_grid(tiles: int, schedule: str, device: torch.device, unused: torch.Tensor):
    """(programs, counter) of a launch over `tiles` tiles under `schedule`: one program a tile ("grid") or a
    persistent grid of at most one program an SM. "dynamic" programs start at their ids and take later tiles
    from a zeroed int32 counter; the other schedules never read it (`unused` stands in)."""
    programs = tiles if schedule == "grid" else min(tiles, device_props(device.index)[1])
    counter = torch.zeros(1, dtype=torch.int32, device=device) if schedule == "dynamic" else unused
    return programs, counter


def launch_fwd(q, k, v, out, lse, causal: bool, scale: float, schedule: str | None = None) -> None:
    """schedule: one of _SCHEDULES, by default WS_SCHEDULE (see the measurements above)."""
    from ..kernels import attention_fwd_ws as kw

    B, Hq, Sq, D, Hkv, Skv = dims(q, k)
    unit_programs = cdiv(Sq, 2 * WS_Q_ROWS) * (Hq // Hkv)
    tiles = unit_programs * B * Hkv
    schedule = schedule or WS_SCHEDULE
    programs, counter = _tile_grid(tiles, schedule, q.device, lse)
    eager_launcher(kw.attention_fwd_ws)[(programs,)](
        ws_desc(q, WS_Q_ROWS), ws_desc(k, WS_BLOCK_N), ws_desc(v, WS_BLOCK_N), ws_desc(out, WS_Q_ROWS), lse,
        counter,
        Hq, Hkv, Sq, Skv, scale, lpt_chunk(causal, 2 * Skv * D * k.element_size(), unit_programs),
        tiles, CAUSAL=causal, STAGES=ws_stages(D), SCHEDULE=_SCHEDULES[schedule], CONSUMER_REGS=WS_REGS[0],
        PRODUCER_REGS=WS_REGS[1], num_warps=4, maxnreg=WS_MAXNREG,
    )


# The Gluon backward (kernels/attention_bwd_ws.py). WS_BWD = True (default): the dK/dV kernel (64-row query
# blocks, WS_BWD_STAGES of Q, dO, LSE and delta in the ring) with the Triton dQ kernel; "all": the Gluon dQ
# kernel too (WS_DQ_BLOCK_N keys a step), EXPERIMENTAL and not faster; False: the Triton kernels only.
# H100, bf16, backward TFLOP/s (scripts/ab_attention.py bwd-time, device time, best of three alternating
# rounds), Triton dK/dV -> Gluon dK/dV at 2 / 3 / 4 stages -> with the Gluon dQ too, cuDNN:
#   8x16x2048x128 364 -> 421 / 417 / 415 -> 422 (509), causal 294 -> 347 / 344 / 348 -> 345 (395)
#   4x16x4096x128 397 -> 458 / 455 / 455 -> 460 (561), causal 348 -> 415 / 421 / 412 -> 412 (473)
#   1x16x16384x128 426 -> 474 / 471 / 451 -> 466 (572), causal 402 -> 472 / 474 / 460 -> 473 (554)
#   8x16x2048x128 8:1 386 -> 444 / 446 / 450 -> 453 (490), causal 286 -> 316 / 312 / 316 -> 313 (370)
#   8x32x2048x64 354 -> 353 / 356 / 357 -> 301 (419), causal 282 -> 295 / 295 / 294 -> 251 (314)
WS_BWD: bool | str = True
WS_BWD_BLOCK_M = 64
WS_DKDV_KEYS = 128  # keys a dK/dV program holds (two warpgroups of 64)
WS_BWD_STAGES = 2
# The dK/dV tiles' schedule, as the forward's (WS_SCHEDULE). H100 bwd-time, dynamic / grid, TFLOP/s: D=128
# 420 / 416 (8x16x2048), causal 349 / 342, 8:1 causal 349 / 343, 16384 causal 471 / 469; D=64 362 / 350,
# causal 305 / 292 (the loop's registers cost 30-70 B more spill at D=128: the gain is small there).
WS_BWD_SCHEDULE = "dynamic"


def ws_bwd_fits(dtype: torch.dtype, B: int, Hq: int, Sq: int, D: int, Hkv: int, Skv: int, causal: bool,
                scale: float) -> bool:
    """The problems the Gluon dK/dV kernel takes: _gluon_problem's, at least WS_MIN_SQ keys (a program holds
    128) and _pays_launch (as the forward's)."""
    return _gluon_problem(dtype, D, scale) and Skv >= WS_MIN_SQ and _pays_launch(B, Hq, Sq, D, Skv, causal)


def ws_bwd_applies(q, k, v, do, lse, dk, dv, scale: float, causal: bool) -> bool:
    """Whether the backward's dK/dV goes to the Gluon kernel: WS_BWD on, a problem it takes (ws_bwd_fits)
    where a Gluon kernel runs, q, k, v, do that TMA can address, dk and dv of a unit last stride and a
    contiguous, 16-byte aligned lse (read through a 1-D descriptor; delta is the caller's own buffer)."""
    if not WS_BWD or not ws_bwd_fits(q.dtype, *dims(q, k), causal, scale) or not _gluon_runs(q):
        return False
    if not lse.is_contiguous() or lse.data_ptr() % 16:
        return False
    return dk.stride(3) == 1 and dv.stride(3) == 1 and all(tma_addressable(t) for t in (q, k, v, do))


def launch_dkdv(q, k, v, do, lse, delta, dk, dv, causal: bool, scale: float, split: int = 1) -> None:
    """dK, dV of attention_bwd_into through the Gluon kernel; delta as attention_bwd_delta writes it. q, k,
    v, do TMA-addressable; dk, dv with a unit last stride: (B, Hkv, Skv, D), or with split > 1 (ws_dkdv_split)
    contiguous fp32 (split, B, Hkv, Skv, D) partials over slices of the GQA group's heads."""
    from ..kernels import attention_bwd_ws as kw

    B, Hq, Sq, D, Hkv, Skv = dims(q, k)
    key_blocks = cdiv(Skv, WS_DKDV_KEYS)
    chunk = lpt_chunk(causal, 2 * (Hq // Hkv // split) * Sq * D * q.element_size(), key_blocks)
    # A TMA coordinate must be 16-byte aligned (an unaligned one is an illegal instruction): each head's
    # rows of the 1-D LSE and delta boxes start at a multiple of 4, so odd lengths get padded copies.
    pitch = Sq + (-Sq) % 4
    if pitch != Sq:
        lse, delta = (torch.nn.functional.pad(t, (0, pitch - Sq)) for t in (lse, delta))
    strides = (*dk.stride()[:4], *dv.stride()[:4]) if split > 1 else (0, *dk.stride()[:3], 0, *dv.stride()[:3])
    tiles = key_blocks * B * Hkv * split
    schedule = WS_BWD_SCHEDULE
    programs, counter = _tile_grid(tiles, schedule, q.device, delta)
    eager_launcher(kw.attention_bwd_dkdv_ws)[(programs,)](
        ws_desc(q, WS_BWD_BLOCK_M), ws_desc(do, WS_BWD_BLOCK_M), ws_desc(k, 64), ws_desc(v, 64),
        rows_desc(lse, WS_BWD_BLOCK_M), rows_desc(delta, WS_BWD_BLOCK_M), dk, dv, counter, *strides,
        Hq, Hkv, Sq, Skv, pitch, scale, chunk, split, tiles,
        CAUSAL=causal, STAGES=WS_BWD_STAGES, SCHEDULE=_SCHEDULES[schedule], CONSUMER_REGS=WS_REGS[0],
        PRODUCER_REGS=WS_REGS[1], num_warps=4, maxnreg=WS_MAXNREG,
    )


# Causal GQA: the programs of the low key blocks loop over the most query rows of every head of the group;
# in a small grid they are the critical path, so the group's heads are split over several programs. H100,
# bf16, 8:1 causal backward TFLOP/s by split 1 / 2 / 4 / 8 (bwd-time, best of three rounds; cuDNN):
# 8x16x2048x128 312 / 330 / 344 / 318 (367), 2x16x8192x128 386 / 418 / 455 / 444 (510), 1x16x16384x128
# 463 / 480 / 463 / 455 (547), 4x16x4096x128 345 / 385 / 412 / 391 (448): each 256 programs unsplit.
# 8x32x2048x64 4:1 (1024 programs) 319 / 285 / 264.
WS_DKDV_TARGET_PROGRAMS = 1024


def ws_dkdv_split(group: int, programs: int, causal: bool) -> int:
    """The Gluon dK/dV kernel's head split: attention_plan.head_split up to WS_DKDV_TARGET_PROGRAMS."""
    return head_split(group, programs, causal, WS_DKDV_TARGET_PROGRAMS, WS_DKDV_TARGET_PROGRAMS)


WS_DQ_BLOCK_N = 64
WS_DQ_STAGES = 3


def launch_dq(q, k, v, do, lse, delta, dq, causal: bool, scale: float) -> None:
    """dQ of attention_bwd_into through the Gluon kernel (EXPERIMENTAL, opt-in: WS_BWD = "all")."""
    from ..kernels import attention_bwd_ws as kw

    B, Hq, Sq, D, Hkv, Skv = dims(q, k)
    unit_programs = cdiv(Sq, 128) * (Hq // Hkv)
    eager_launcher(kw.attention_bwd_dq_ws)[(unit_programs * B * Hkv,)](
        ws_desc(q, 64), ws_desc(do, 64), ws_desc(k, WS_DQ_BLOCK_N), ws_desc(v, WS_DQ_BLOCK_N), lse, delta, dq,
        *dq.stride()[:3], Hq, Hkv, Sq, Skv, scale,
        lpt_chunk(causal, 2 * Skv * D * k.element_size(), unit_programs),
        CAUSAL=causal, STAGES=WS_DQ_STAGES, CONSUMER_REGS=WS_REGS[0], PRODUCER_REGS=WS_REGS[1], num_warps=4,
        maxnreg=WS_MAXNREG,
    )
