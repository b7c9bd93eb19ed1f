"""GEMM launchers: kernel and config choice, destination-passing launches, and the FLOP/byte model.

`gemm_into` writes dropout(act(a @ b + bias)) + residual into `out` (and a @ b + bias into `pre` when
given). Kernel choice: the persistent TMA kernel on sm_90 for 16-bit operands whose layout a tensor
descriptor can address and problems of at least TMA_MIN_WORK; the portable pointer kernel otherwise and
always in the interpreter. Where a Gluon (warp-specialized) kernel measured faster, the TMA kernel's launch
goes to it: ops/gemm_gluon.py holds those rules and launches.
"""
from __future__ import annotations

import functools

import torch
import triton

from ..kernels import gemm as k
from ..kernels import gemm_bwd as kb
from ..kernels import gemm_tma as kt
from ..runtime import INTERPRET
from . import gemm_configs as gc
from ._launch import cdiv, device_props, launcher, next_pow2
from .gemm_configs import GemmConfig
from .gemm_gluon import COOP_CONFIG, GLUON_KERNELS, WS_CONFIG, coop_applies, launch_gluon, ws_applies

ACTIVATIONS = ("none", "relu", "silu", "gelu", "gelu_tanh", "relu2", "leaky_relu")
# Elementwise dact pass: (rows, columns) of the saved pre-activation per program (the rows are also the
# dbias partial height) and warps. H200 (scripts/sweep_gemm_epilogue.py dact, with dbias), TB/s at
# 8192x14336 / 16384x4096 against the former (32, 128, 8): SiLU (128, 64, 8) 3.49 / 3.17 vs 2.17 / 1.99;
# the heavier epilogues (64, 64, 4): SiLU + dropout 3.09 / 2.77 vs 2.02 / 1.86, GELU 2.53 / 2.36 vs 2.01 /
# 1.84 (at 64x128 the sm_90 build spilled with gelu + Philox dropout).
DACT_TILE = (128, 64, 8)
DACT_TILE_HEAVY = (64, 64, 4)
# Interpreter: small tiles, so test shapes span several row tiles (several dbias partial rows).
DACT_TILE_INTERPRET = (16, 32, 4)
# Widest epilogue slice of the TMA kernel with dropout, a stored pre-activation or a residual: 32 columns
# keep a 128x256 tile's epilogue in registers (no spills in the sm_90 build, cuobjdump
# --dump-resource-usage; 64 still spilled with a stored pre-activation and a transposed a).
EPI_NARROW_N = 32


def device_info(t: torch.Tensor) -> tuple[tuple[int, int] | None, int]:
    """(capability, SM count); capability None in the interpreter. is_cuda/get_device, not t.device:
    building the device object costs ~1 us a call."""
    if INTERPRET or not t.is_cuda:
        return None, 1
    return device_props(t.get_device())


def _alloc(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _desc_ok(t: torch.Tensor) -> tuple[bool, bool]:
    """(addressable by a 2-D tensor descriptor, stored transposed). Needs a unit stride in one dim, the
    other stride and the base 16-byte aligned (storage_offset: allocations themselves are aligned, and
    fake tensors under torch.compile have no data_ptr)."""
    e = t.element_size()
    s0, s1 = t.stride()
    if (t.storage_offset() * e) % 16:
        return False, False
    if s1 == 1 and (s0 * e) % 16 == 0 and s0 >= t.shape[1]:
        return True, False
    if s0 == 1 and (s1 * e) % 16 == 0 and s1 >= t.shape[0]:
        return True, True
    return False, False


_TMA_DTYPES = (torch.float16, torch.bfloat16)


def tma_layout(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> tuple[bool, bool, bool]:
    """(tma possible, a transposed, b transposed)."""
    if a.dtype not in _TMA_DTYPES:  # tf32 wgmma wants K-major operands: keep fp32 portable
        return False, False, False
    a_ok, a_t = _desc_ok(a)
    b_ok, b_t = _desc_ok(b)
    o_ok, o_t = _desc_ok(out)
    return a_ok and b_ok and o_ok and not o_t, a_t, b_t


def choose_config(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, run=None) -> GemmConfig:
    return _choose(a, b, out, run, *device_info(a))[0]


def _choose(a, b, out, run, cap, sms) -> tuple[GemmConfig, tuple[bool, bool, bool] | None]:
    """(config, tma_layout or None). The layout (a few us of host time) is worked out only where it can
    change the answer: a TMA config from the table or the heuristic, which falls back to the portable
    one when the operands' layout rules TMA out (with tma_ok False neither source can give anything
    else), or the autotuner."""
    # SymInts under torch.compile: the config (tile sizes become constexprs) needs concrete sizes.
    M, K = int(a.shape[0]), int(a.shape[1])
    N = int(b.shape[1])
    # tma_layout is never ok for other dtypes
    tma_maybe = cap is not None and cap[0] == 9 and a.dtype in _TMA_DTYPES and min(M, N, K) > 0
    if cap is not None and run is not None and gc.autotune_enabled():
        layout = tma_layout(a, b, out) if tma_maybe else None
        tma_ok = layout is not None and layout[0]
        key = gc.table_key(cap, M, N, K, str(a.dtype).replace("torch.", ""))
        cfg = gc.autotune(key + f"/tma{int(tma_ok)}", gc.candidates(M, N, K, a.element_size(), tma_ok), run)
        return cfg, layout
    cfg = _table_or_heuristic(cap, sms, M, N, K, a.dtype, a.element_size(), tma_maybe)
    if cfg.kernel != "tma":
        return cfg, None
    layout = tma_layout(a, b, out)
    if not layout[0]:
        cfg = _table_or_heuristic(cap, sms, M, N, K, a.dtype, a.element_size(), False)
    return cfg, layout


@functools.lru_cache(maxsize=4096)
def _table_or_heuristic(cap, sms, M, N, K, dtype, elem, tma_ok) -> GemmConfig:
    """The tuned table's config for the shape's bucket, else the heuristic; memoized (every call pays
    for it otherwise: key strings, table lookups)."""
    if cap is not None:
        cfg = gc.table_config(gc.table_key(cap, M, N, K, str(dtype).replace("torch.", "")), tma_ok)
        if cfg is not None:
            return cfg
    return gc.heuristic_config(M, N, K, elem, cap, sms, tma_ok)


def epi_split(config: GemmConfig, narrow: bool, activation: str) -> int:
    """Column slices the TMA kernel's epilogue works through: 2 with epi_subtile, else 1; `narrow` (dropout,
    a stored pre-activation or a residual) caps a slice at EPI_NARROW_N columns. Philox and the pointer
    stores and loads work on a whole slice at once, and on 128 or 256 columns they spilled registers in the
    sm_90 build (up to 2.7 KB a thread: dropout then cost 1-3x the GEMM itself). GELU (erf) takes at least
    two: on a whole 128x256 tile it used 255 registers and spilled (ptxas), and halves were 0.7-2.9% faster
    at 4096^3, 8192^3 and the LLM shapes (H100, three alternating rounds, device time; `scripts/
    sweep_gemm_epilogue.py split` times it that way), never slower."""
    split = 2 if config.epi_subtile or activation == "gelu" else 1
    if narrow:
        split = max(split, min(8, config.block_n // EPI_NARROW_N))
    return split


def flatten_loop(config: GemmConfig, activation: str, narrow: bool) -> bool:
    """The config's flatten, kept only for light epilogues. Flattening the persistent loop made GELU (erf)
    and the narrow-slice epilogues (dropout, a stored pre-activation, a residual) 1.3-1.4x slower at
    2048^3 (H100: GELU 0.0556 vs 0.0386 ms, dropout 0.0517 vs 0.0386), where bias+SiLU gained 3%."""
    return config.flatten and not (narrow or activation == "gelu")


def _precision(a: torch.Tensor, tf32: bool) -> str:
    return "tf32" if (tf32 or a.dtype != torch.float32) else "ieee"


def gemm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, *, bias=None, residual=None, pre=None,
              seed=None, activation: str = "none", dropout_p: float = 0.0, tf32: bool = False,
              config: GemmConfig | None = None) -> None:
    """a (M, K), b (K, N) any strides; out (M, N) unit column stride; bias (N,); residual (M, N) any
    strides; pre (M, N) unit column stride or None; seed: int64 tensor (1,) when dropout_p > 0.
    fp32 operands: exact fp32 products unless tf32=True (exact is what torch's default matmul precision,
    "highest", gives; trifuse.gemm passes tf32 from torch's setting). 16-bit operands ignore it."""
    M, K = a.shape
    N = b.shape[1]
    if M == 0 or N == 0:
        return
    dropout = dropout_p > 0.0
    cap, sms = device_info(a)
    layout = None
    explicit = config  # a caller's config is launched as given (tests, tuning); the choice may move to ws
    if config is None:
        run = None
        if cap is not None and gc.autotune_enabled():
            def run(cfg):
                return gemm_into(a, b, out, bias=bias, residual=residual, pre=pre, seed=seed,
                                 activation=activation, dropout_p=dropout_p, tf32=tf32, config=cfg)

        config, layout = _choose(a, b, out, run, cap, sms)
    dummy = out  # never read: the constexpr flags switch the loads off
    res = residual if residual is not None else dummy
    meta = _meta(config, activation, bias is not None, residual is not None, dropout, pre is not None,
                 _precision(a, tf32))
    ptrs = (bias if bias is not None else dummy, res, pre if pre is not None else dummy,
            seed if seed is not None else dummy)
    res_strides = res.stride()
    pre_stride = pre.stride()[0] if pre is not None else 0
    if config.kernel in ("tma", *GLUON_KERNELS):
        ok, a_t, b_t = layout if layout is not None else tma_layout(a, b, out)
        if not ok:
            raise ValueError(f"gemm_into: the {config.kernel} config needs descriptor-compatible a, b and out")
        stored = pre is not None or residual is not None
        narrow = dropout or stored
        traced = torch.compiler.is_compiling() or type(a) not in (torch.Tensor, torch.nn.Parameter)
        # The Gluon kernels stage the output tile in the operands' dtype: another out dtype stays here.
        same_dtype = out.dtype == a.dtype
        gluon = config if config.kernel in GLUON_KERNELS else None
        if gluon is None and explicit is None and same_dtype:
            fits = (config, M, N, K, activation, stored, a_t, traced, dropout)
            gluon = WS_CONFIG if ws_applies(*fits) else COOP_CONFIG if coop_applies(*fits) else None
        if gluon is not None:
            if stored or a_t or not same_dtype:
                raise ValueError(f"gemm_into: the {config.kernel} kernel takes no residual or pre, a "
                                 f"K-contiguous a and an out of a's dtype ({a.dtype}), got out {out.dtype}")
            launch_gluon(a, b, out, bias, activation, b_t, sms, gluon, seed, dropout_p)
            return
        tiles = cdiv(int(M), config.block_m) * cdiv(int(N), config.block_n)
        # An out wider than the operands (bf16 -> fp32) stages its slices in more shared memory: more slices,
        # so the staging takes what a 16-bit out's does (128x256 fp32 in one slice needed 272 KB, over 227).
        split = epi_split(config, narrow, activation)
        wider = out.element_size() // a.element_size()
        split = max(split, min(config.block_n // EPI_NARROW_N, split * wider))
        triton.set_allocator(_alloc)  # descriptor workspace; a ContextVar, so set it in this thread
        a_s, b_s = a.stride(), b.stride()
        launcher(kt.gemm_tma_kernel)[(min(sms, tiles),)](
            a, b, out, *ptrs, M, N, K, a_s[1] if a_t else a_s[0], b_s[1] if b_t else b_s[0],
            out.stride()[0], *res_strides, pre_stride, dropout_p, **meta, A_T=a_t, B_T=b_t,
            NUM_SMS=sms, EPI_SPLIT=split, FLATTEN=flatten_loop(config, activation, narrow),
        )
        return
    grid = (cdiv(M, config.block_m) * cdiv(N, config.block_n),)
    launcher(k.gemm_fwd_kernel)[grid](
        a, b, out, *ptrs, M, N, K, *a.stride(), *b.stride(), out.stride()[0], *res_strides, pre_stride,
        dropout_p, **meta,
    )


@functools.lru_cache(maxsize=1024)
def _meta(config: GemmConfig, activation: str, has_bias: bool, has_res: bool, dropout: bool, store_pre: bool,
          precision: str) -> dict:
    """gemm_into's constexpr keywords for one config and epilogue, built once (a dict literal of twelve
    costs ~1.5 us a call). Callers unpack it, never mutate it."""
    return {"ACT": activation, "HAS_BIAS": has_bias, "HAS_RES": has_res, "DROPOUT": dropout,
            "STORE_PRE": store_pre, "PRECISION": precision, "BLOCK_M": config.block_m,
            "BLOCK_N": config.block_n, "BLOCK_K": config.block_k, "GROUP_M": config.group_m,
            "num_warps": config.num_warps, "num_stages": config.num_stages}


def dact_tile(activation: str, dropout: bool) -> tuple[int, int, int]:
    """(rows, columns, warps) of the dact pass's program."""
    return DACT_TILE_HEAVY if dropout or activation in ("gelu", "gelu_tanh") else DACT_TILE


def dact_into(dy: torch.Tensor, pre: torch.Tensor | None, dpre: torch.Tensor, dbias: torch.Tensor | None,
              seed, activation: str, dropout_p: float, tile: tuple[int, int, int] | None = None) -> None:
    """dpre = dy * keep/(1-p) * act'(pre) in one elementwise pass; dbias = column sums of dpre, from
    fp32 per-row-tile partials summed once (deterministic). pre None only for activation "none"."""
    M, N = dy.shape
    if dbias is not None and (M == 0 or N == 0):
        dbias.zero_()
    if M == 0 or N == 0:
        return
    block_m, block_n, warps = tile or (DACT_TILE_INTERPRET if INTERPRET else dact_tile(activation, dropout_p > 0))
    block_n = min(block_n, max(16, next_pow2(int(N))))  # a constexpr: concrete N
    tiles_m = cdiv(M, block_m)
    part = torch.empty(*((tiles_m, N) if dbias is not None else (1,)), dtype=torch.float32, device=dy.device)
    src = pre if pre is not None else dy
    launcher(kb.dact_kernel)[(tiles_m, cdiv(N, block_n))](
        dy, src, dpre, part, seed if seed is not None else part, M, N, dy.stride(0), dy.stride(1),
        src.stride(0), dpre.stride(0), dropout_p,
        ACT=activation, DROPOUT=dropout_p > 0.0, DBIAS=dbias is not None, HAS_PRE=pre is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
    )
    if dbias is not None:
        dbias.copy_(part.sum(0))


def gemm_dact_into(a: torch.Tensor, b: torch.Tensor, bias, dy: torch.Tensor, dpre: torch.Tensor,
                   dbias: torch.Tensor | None, seed, activation: str, dropout_p: float, tf32: bool = False,
                   config: GemmConfig | None = None) -> None:
    """recompute=True: pre = a @ b + bias in a GEMM whose epilogue reads dy and writes dpre (+ dbias); pre is
    rounded to the wider of a's and dy's dtypes, as the forward saves it."""
    M, K = a.shape
    N = b.shape[1]
    if dbias is not None and (M == 0 or N == 0):
        dbias.zero_()
    if M == 0 or N == 0:
        return
    if config is None or config.kernel != "portable":
        cap, sms = device_info(a)
        config = gc.heuristic_config(int(M), int(N), int(K), a.element_size(), cap, sms, tma_ok=False)
    tiles_m = cdiv(M, config.block_m)
    part = torch.empty(*((tiles_m, N) if dbias is not None else (1,)), dtype=torch.float32, device=a.device)
    grid = (tiles_m * cdiv(N, config.block_n),)
    launcher(kb.gemm_dact_kernel)[grid](
        a, b, bias if bias is not None else part, dy, dpre, part, seed if seed is not None else part,
        M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), dy.stride(0), dy.stride(1),
        dpre.stride(0), dropout_p,
        ACT=activation, HAS_BIAS=bias is not None, DROPOUT=dropout_p > 0.0, DBIAS=dbias is not None,
        PRECISION=_precision(a, tf32), ROUND_PRE=torch.promote_types(a.dtype, dy.dtype) == a.dtype,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if dbias is not None:
        dbias.copy_(part.sum(0))


def gemm_flops(m: int, n: int, k: int, direction: str = "fwd") -> int:
    """2*M*N*K per GEMM: the forward does one, the backward two (dX and dW)."""
    return {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[direction] * 2 * m * n * k


def intermediate_bytes(m: int, n: int, elem: int, *, activation: str, dropout: bool,
                       residual: bool = False) -> int:
    """Bytes of (M, N) intermediates the eager composition F.linear(x, w, b) -> act -> dropout -> + r
    allocates (and writes, then reads back) that the fused forward never writes: one full tensor per step
    after the GEMM except the last, plus dropout's mask (1 byte per element)."""
    steps = int(activation != "none") + int(dropout) + int(residual)
    return steps * m * n * elem + (m * n if dropout else 0)
