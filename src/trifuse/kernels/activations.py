"""Every activation the GEMM epilogues know, and its derivative: the one place both are defined.

`activation(x, ACT)` and `activation_grad(x, ACT)` take fp32 values of the pre-activation and a constexpr
name, so an unused activation compiles away. No libdevice externs (the interpreter lacks them): gelu_tanh's
tanh is written as a sigmoid, the normal CDF (gelu) with a rational fit of erfc; exp and reciprocal use
inline PTX on the GPU (FAST_MATH). Every one keeps its relative accuracy in the tails.
"""
import os

import triton
import triton.language as tl

NAMES = ("none", "relu", "silu", "gelu", "gelu_tanh", "relu2", "leaky_relu")

LEAKY_SLOPE = tl.constexpr(0.01)  # torch.nn.functional.leaky_relu's default negative_slope
SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1/sqrt(2), gelu (erf)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1/sqrt(2*pi), gelu's density term
SQRT_2_PI = tl.constexpr(0.7978845608028654)  # sqrt(2/pi), gelu_tanh
GELU_C = tl.constexpr(0.044715)
LOG2E = tl.constexpr(1.4426950408889634)
# Inline PTX for exp and reciprocal on the GPU (the epilogues' sigmoid and tanh are issue- and MUFU-bound:
# 13 instructions an element became 5); the interpreter cannot run inline assembly and takes tl.exp and `/`.
# The same test as runtime.INTERPRET, which kernels cannot import (it imports torch).
FAST_MATH = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")


@triton.jit
def _exp(x):
    """e^x. On the GPU one MUFU.EX2 (ex2.approx.ftz, relative error ~2^-22); tl.exp's non-ftz ex2 adds a
    compare and two multiplies for subnormal results an epilogue has no use for."""
    if FAST_MATH:
        y = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x * LOG2E], dtype=tl.float32,
                                      is_pure=True, pack=1)
    else:
        y = tl.exp(x)
    return y


@triton.jit
def _recip(x):
    """1 / x. On the GPU one MUFU.RCP (rcp.approx.ftz, within 1 ulp): `/` emits div.full with range
    scaling around it. 1/inf = 0 and 1/0 = inf either way."""
    if FAST_MATH:
        y = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                      is_pure=True, pack=1)
    else:
        y = 1.0 / x
    return y


@triton.jit
def _sigmoid(x):
    return _recip(1.0 + _exp(-x))


@triton.jit
def _normal_cdf(x):
    """Phi(x) = erfc(-x / sqrt 2) / 2 through Numerical Recipes' Chebyshev fit of erfc (Press et al., 2nd
    ed., 6.2: relative error below 1.2e-7 for every argument), so the lower tail keeps its relative
    accuracy too. One reciprocal, one exp and nine FMAs: libdevice's erf took ~32 instructions an element
    in the GEMM epilogue (sm_90 build), which made GELU the costliest epilogue."""
    z = tl.abs(x) * SQRT1_2
    t = _recip(1.0 + 0.5 * z)
    poly = 1.48851587 + t * (-0.82215223 + t * 0.17087277)
    poly = 0.27886807 + t * (-1.13520398 + t * poly)
    poly = 0.09678418 + t * (-0.18628806 + t * poly)
    poly = 1.00002368 + t * (0.37409196 + t * poly)
    half_erfc = 0.5 * t * _exp(t * poly - z * z - 1.26551223)
    return tl.where(x >= 0.0, 1.0 - half_erfc, half_erfc)


@triton.jit
def activation(x, ACT: tl.constexpr):
    """act(x) for fp32 x."""
    if ACT == "relu":
        y = tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == "silu":
        y = x * _sigmoid(x)
    elif ACT == "gelu":
        y = x * _normal_cdf(x)
    elif ACT == "gelu_tanh":
        # (1 + tanh(u)) / 2 = sigmoid(2u): no 1 + tanh cancelling to 0 in the lower tail.
        y = x * _sigmoid(2.0 * SQRT_2_PI * (x + GELU_C * x * x * x))
    elif ACT == "relu2":
        r = tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
        y = r * r
    elif ACT == "leaky_relu":
        y = tl.where(x > 0.0, x, x * LEAKY_SLOPE)
    else:
        tl.static_assert(ACT == "none", "unknown activation")
        y = x
    return y


@triton.jit
def activation_grad(x, ACT: tl.constexpr):
    """d act / dx at fp32 x (at 0: relu, relu2, leaky_relu take the left derivative, as torch does)."""
    if ACT == "relu":
        d = tl.where(x <= 0.0, 0.0, 1.0)  # nan passes the gradient on, as torch's threshold_backward
    elif ACT == "silu":
        s = _sigmoid(x)
        d = s * (1.0 + x * (1.0 - s))
    elif ACT == "gelu":
        d = _normal_cdf(x) + x * INV_SQRT_2PI * _exp(-0.5 * x * x)
    elif ACT == "gelu_tanh":
        # With s = sigmoid(2u): (1 + tanh u) / 2 = s and (1 - tanh^2 u) / 2 = 2 s (1 - s).
        s = _sigmoid(2.0 * SQRT_2_PI * (x + GELU_C * x * x * x))
        d = s + 2.0 * x * s * (1.0 - s) * SQRT_2_PI * (1.0 + 3.0 * GELU_C * x * x)
    elif ACT == "relu2":
        d = 2.0 * tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == "leaky_relu":
        d = tl.where(x > 0.0, 1.0, LEAKY_SLOPE)
    else:
        tl.static_assert(ACT == "none", "unknown activation")
        d = tl.full(x.shape, 1.0, tl.float32)
    return d


PHILOX_KEY_A = tl.constexpr(0x9E3779B9)
PHILOX_KEY_B = tl.constexpr(0xBB67AE85)
PHILOX_ROUND_A = tl.constexpr(0xD2511F53)
PHILOX_ROUND_B = tl.constexpr(0xCD9E8D57)


@triton.jit
def _mul_wide(x, M: tl.constexpr):
    """(high, low) 32 bits of the 64-bit product M * x (uint32 x). On the GPU one mul.wide.u32 (one
    IMAD.WIDE.U32); umulhi and a multiply lower to two IMADs."""
    if FAST_MATH:
        hi, lo = tl.inline_asm_elementwise(
            f"{{ .reg .u64 t; mul.wide.u32 t, $2, {M}; mov.b64 {{$1, $0}}, t; }}", "=r,=r,r", [x],
            dtype=(tl.uint32, tl.uint32), is_pure=True, pack=1)
    else:
        hi = tl.math.umulhi(x, M)
        lo = x * M
    return hi, lo


@triton.jit
def philox_wide(seed, c0, c1):
    """Philox4x32-10 of the counter (c0, c1, 0, 0) (uint32) keyed by the int64 seed's low and high words:
    the same words as tl.philox(seed, c0, c1, 0, 0), one wide multiply a round instead of two."""
    seed = seed.to(tl.uint64)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = (seed >> 32).to(tl.uint32)
    # The first round with c2 = c3 = 0 (B * c2 = 0), then nine full rounds.
    hi_a, lo_a = _mul_wide(c0, PHILOX_ROUND_A)
    c0, c1, c2, c3 = c1 ^ k0, c1 * 0, hi_a ^ k1, lo_a
    for _ in tl.static_range(9):
        k0 = tl.add(k0, PHILOX_KEY_A, sanitize_overflow=False)
        k1 = tl.add(k1, PHILOX_KEY_B, sanitize_overflow=False)
        hi_b, lo_b = _mul_wide(c2, PHILOX_ROUND_B)
        hi_a, lo_a = _mul_wide(c0, PHILOX_ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
    return c0, c1, c2, c3


@triton.jit
def dropout_keep(seed_ptr, rows, cols, p):
    """Keep mask for global rows ([BM]) x cols ([BN]: consecutive, starting at a multiple of 8) of an output.

    A function of (seed, global row, global column) only, so the forward and backward may tile differently
    and still agree: Philox4x32-10 keyed by the seed, counter (col // 8, row, 0, 0), gives 128 bits read as
    eight little-endian uint16 draws, draw col % 8 for that column; drop where draw < round(p * 65536).
    One Philox call serves 8 columns (tl.rand would spend one call per element), the cost that made the
    dropout epilogue slow; p is resolved to 1/65536 (FlashAttention's dropout uses 1/256).
    `trifuse.reference.dropout.keep_mask` is the same function in plain torch ops.
    The Philox is philox_wide: tl.philox's words in fewer instructions (128x256 TMA tile, sm_90 build:
    4408 -> 4136 SASS instructions with bias+SiLU+dropout).
    """
    BN: tl.constexpr = cols.shape[0]
    tl.static_assert(BN % 8 == 0, "dropout tiles must be a multiple of 8 columns wide")
    seed = tl.load(seed_ptr)
    first_group = tl.min(cols, axis=0) // 8
    groups = (first_group + tl.arange(0, BN // 8)).to(tl.uint32)
    c0 = groups[None, :] + tl.zeros_like(rows)[:, None].to(tl.uint32)
    c1 = rows.to(tl.uint32)[:, None] + tl.zeros_like(groups)[None, :]
    w0, w1, w2, w3 = philox_wide(seed, c0, c1)
    # [.., 2, 2] whose row-major order is w0, w1, w2, w3; then each word's low and high halves.
    words = tl.join(tl.join(w0, w2), tl.join(w1, w3))
    draws = tl.join(words & 0xFFFF, words >> 16)
    threshold = (tl.full((), p, tl.float32) * 65536.0 + 0.5).to(tl.uint32)
    return tl.reshape(draws >= threshold, (rows.shape[0], BN))
