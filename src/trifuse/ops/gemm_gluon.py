"""GEMM launchers for the Gluon (warp-specialized, sm_90) kernels: where each takes a launch from the
Triton TMA kernel, with the measurements behind each rule, and their launches with host tensor descriptors.
ops.gemm.gemm_into asks ws_applies, then coop_applies, and calls launch_gluon.
"""
from __future__ import annotations

from ._gluon import GLUON_API, descriptor
from ._launch import cdiv, eager_launcher
from .gemm_configs import GemmConfig

# The warp-specialized Gluon kernel (kernels/gemm_ws.py): 128x128 tiles per consumer warpgroup, 5 stages
# (229 KB of shared memory with the two output tiles), registers moved from the producer warp to the
# consumers. H100, bf16, device time, best of three alternating rounds, fraction of cuBLAS bare's speed,
# this kernel vs the TMA kernel (two runs): GELU 0.89-0.90 vs 0.86-0.87 (4096^3), 0.93-0.94 vs 0.89-0.90
# (16384x4096x4096); bias+SiLU there +0.3-1.9%; 2048^3 bare 0.94 vs 0.90, bias+SiLU 0.88-0.89 vs
# 0.81-0.82, GELU 0.80-0.82 vs 0.76, 1000x1000x3000 +15-20%. It loses where the 128x256 tiles' main loop
# counts: 8192^3 (0.93-0.95 vs 0.98-1.00), N or K = 14336 (0.79-0.89 vs 0.88-0.98), bare at 4096^3.
# Its launch costs more host time (Triton's own launcher with three descriptor arguments: 2048^3
# bias+SiLU 157 vs 99 us a call, 116 vs 62 us in the default timing), so it is used only where the
# kernel outlasts that (M*N*K >= WS_MIN_WORK): the 2048^3 device-time gains are left on the table.
WS_CONFIG = GemmConfig("ws", 128, 128, 64, group_m=8, num_warps=4, num_stages=5)
WS_REGS = (232, 40)  # consumer warpgroup, producer warp (setmaxnreg); the kernel's maxnreg below
WS_MAXNREG = 168  # 12 warps (4 + 4 + the producer's warpgroup) x 32 x 168 fits the 64K register file
# Eleventh session (H100, device time, best of three alternating rounds, scratch/ab_halves.py): at
# 4096x4096x2048 the table's Triton config beat this kernel (bias+SiLU 104.6 vs 107.2 us, GELU 109.9 vs
# 111.5, gelu_tanh 105.8 vs 108.1), which also costs ~14 us more host time a call (scratch/host_ws2.py);
# at 4096^3 this kernel still won (197.0 vs 199.3, 203.0 vs 208.7, 198.7 vs 200.0). So the floor is 2^36.
WS_MIN_WORK = 2 ** 36  # 4096^3: a ~0.2 ms kernel
WS_ACTIVATIONS = ("silu", "gelu", "gelu_tanh")  # transcendental epilogues: faster up to N, K <= 4096
WS_MAX_NK = 4096
# Dropout through the Gluon kernel (its mask pass runs in shared memory while the other warpgroup's MMAs
# run). H100, bf16, device time, best of three alternating rounds (scripts/sweep_gemm_epilogue.py
# ws-dropout), bias+SiLU+dropout over the default bias+SiLU, Triton kernel -> Gluon: 2048^3 +13.1% -> -1.7%,
# 4096x4096x2048 +9.0 -> +6.0, 4096^3 +11.2 -> +4.8, but 16384x4096x4096 +8.8 -> +13.1 and 8192^3
# +5.2 -> +6.3; with GELU the Gluon epilogue spills and loses everywhere (+25-32% against +9-13%),
# without an activation it ties or loses (4096^3 +8.0 vs +8.3, 16384x4096^2 +19.6 vs +7.8).
# Nineteenth session, the mask's Philox now philox_wide (one wide multiply a product; keep_rows), best of five
# alternating rounds (scripts/ab_gemm_coop.py), bias+SiLU+dropout, Triton / cooperative / this kernel:
# 4096^3 208 / 205 / 198 us, 16384x4096x4096 800 / 798 / 786 (a first run of three rounds: 794 / 789 /
# 766), so it takes SiLU dropout at any M with N, K <= 4096; 8192^3 1490 / 1488 / 1507.
WS_DROPOUT_ACTIVATIONS = ("silu",)
# SiLU and gelu_tanh above 4096^3 go to the cooperative kernel instead (COOP_CONFIG's note):
# 16384x4096x4096 0.976 / 0.970 of cuBLAS bare there against 0.968 / 0.954 here; at 4096^3 this kernel
# keeps them (0.948 / 0.948 against 0.939 / 0.939), and GELU (erf) at both (0.912, 0.941 against 0.884,
# 0.912).
WS_LIGHT_MAX_WORK = 2 ** 36
COOP_MIN_DIM = 4096  # the cooperative kernel was measured at M, N, K >= 4096 only


def _gluon_may_take(config: GemmConfig, stored: bool, a_t: bool, traced: bool) -> bool:
    """What both Gluon kernels need of a launch the TMA kernel would take: an epilogue they have (stored: a
    residual or a stored pre-activation, which they have not), a K-contiguous a, and real tensors (not
    traced: torch.compile's wrap_triton takes Triton kernels, not Gluon ones)."""
    return GLUON_API and config.kernel == "tma" and not (stored or a_t or traced)


def ws_applies(config: GemmConfig, M: int, N: int, K: int, activation: str, stored: bool, a_t: bool,
               traced: bool = False, dropout: bool = False) -> bool:
    """Whether the TMA kernel's launch goes to the warp-specialized one instead: what both Gluon kernels
    need (_gluon_may_take) and a size where it measured faster (the notes at WS_CONFIG and
    WS_DROPOUT_ACTIVATIONS)."""
    if not _gluon_may_take(config, stored, a_t, traced) or M * N * K < WS_MIN_WORK:
        return False
    if N > WS_MAX_NK or K > WS_MAX_NK:
        return False
    if dropout:
        return activation in WS_DROPOUT_ACTIVATIONS
    if activation != "gelu" and M * N * K > WS_LIGHT_MAX_WORK and min(M, N, K) >= COOP_MIN_DIM:
        return False  # the cooperative kernel (coop_applies) measured faster there
    return activation in WS_ACTIVATIONS


# The cooperative Gluon kernel (kernels/gemm_coop.py): one 128x256 tile shared by two consumer warpgroups, a
# producer warp for the loads, the epilogue in two warps working beside the next tile's main loop through a
# 16-bit staging tile; 3 stages (3 x 48 KB) beside the 64 KB staging tile; 12 warps x 168 registers. H100,
# bf16, device time, best of three alternating rounds (scripts/ab_gemm_coop.py, eighteenth session),
# fraction of cuBLAS bare's speed, this kernel vs the Triton kernel at 4096^3, 8192^3, 8192x4096x14336,
# 8192x14336x4096, 16384x4096x4096 (MxKxN):
#   bare      0.984 1.015 0.983 0.992 1.005  vs  0.970 1.007 0.969 0.987 0.989
#   bias+SiLU 0.939 0.997 0.955 0.978 0.976  vs  0.918 0.980 0.920 0.974 0.945
#   gelu_tanh 0.939 0.992 0.950 0.974 0.970  vs  0.915 0.976 0.917 0.972 0.945
#   GELU      0.884 0.958 0.891 0.956 0.912  vs  0.878 0.954 0.881 0.958 0.905
#   ReLU      0.968 0.997 0.956 0.981 0.981  vs  0.961 1.002 0.957 0.985 0.979  (a tie: stays Triton)
# Without the producer warp (the first consumer issuing the loads, an epilogue warpgroup; sixteenth session)
# the main loop lost 2-3% (bare 0.93-0.97). Dropout does not gain here: with tl.philox it lost (0.861-0.945 vs
# 0.872-0.955); with philox_wide (nineteenth session, best of five rounds, us, Triton vs this kernel) bias+
# SiLU+dropout ties (8192^3 1490 vs 1488, 8192x4096x14336 1400 vs 1388, 8192x14336x4096 1254 vs 1259,
# 16384x4096^2 800 vs 798), without an activation or with GELU it loses (8192^3 1447 vs 1456, 1527 vs
# 1553). The epilogue walks the staged tile in a loop: unrolled, two warps' GELU took 1.6-1.8x the kernel's
# time (its code outgrew the instruction cache).
COOP_CONFIG = GemmConfig("coop", 128, 256, 64, group_m=8, num_warps=4, num_stages=3)
COOP_REGS = (168, 168)  # the second consumer warpgroup; the epilogue and producer warps (one warpgroup)
COOP_MAXNREG = 168
COOP_ACTIVATIONS = ("none", "silu", "gelu", "gelu_tanh")


def coop_applies(config: GemmConfig, M: int, N: int, K: int, activation: str, stored: bool, a_t: bool,
                 traced: bool = False, dropout: bool = False) -> bool:
    """Whether the TMA kernel's launch goes to the cooperative kernel: what both Gluon kernels need
    (_gluon_may_take), no dropout, M, N, K >= 4096 and an epilogue where it measured faster (COOP_CONFIG's
    note); ws_applies is asked first."""
    if not _gluon_may_take(config, stored, a_t, traced) or dropout:
        return False
    return min(M, N, K) >= COOP_MIN_DIM and activation in COOP_ACTIVATIONS


GLUON_KERNELS = ("ws", "coop")


def launch_gluon(a, b, out, bias, activation: str, b_t: bool, sms: int, config: GemmConfig, seed=None,
                 dropout_p: float = 0.0) -> None:
    """The Gluon kernels: config.kernel "ws" (ping-pong) or "coop" (cooperative, epilogue warps)."""
    if config.kernel == "coop":
        from ..kernels.gemm_coop import gemm_coop_kernel as kernel

        regs, maxnreg = {"CONSUMER_REGS": COOP_REGS[0], "OTHER_REGS": COOP_REGS[1]}, COOP_MAXNREG
    else:
        from ..kernels.gemm_ws import gemm_ws_kernel as kernel

        regs, maxnreg = {"CONSUMER_REGS": WS_REGS[0], "PRODUCER_REGS": WS_REGS[1]}, WS_MAXNREG
    M, K = a.shape
    N = b.shape[1]
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    programs = min(sms, cdiv(M, bm) * cdiv(N, bn))
    eager_launcher(kernel)[(programs,)](
        descriptor(a, (bm, bk)), descriptor(b.t() if b_t else b, (bn, bk) if b_t else (bk, bn)),
        descriptor(out, (bm, bn)), bias if bias is not None else out, seed if seed is not None else out,
        dropout_p, M, N, K, ACT=activation, HAS_BIAS=bias is not None, DROPOUT=dropout_p > 0.0, B_T=b_t,
        STAGES=config.num_stages, GROUP_M=config.group_m, NUM_SMS=programs, **regs, num_warps=4,
        maxnreg=maxnreg,
    )
