"""Every activation the GEMM epilogues know, and its derivative: the one place both are defined.

`activation(x, ACT)` and `activation_grad(x, ACT)` take fp32 values of the pre-activation and a constexpr
name, so an unused activation compiles away. No libdevice externs (the interpreter lacks them): tanh is
written with exp, erf is `tl.math.erf`.
"""
import triton
import triton.language as tl

NAMES = ("none", "relu", "silu", "gelu", "gelu_tanh", "relu2", "leaky_relu")

LEAKY_SLOPE = tl.constexpr(0.01)  # torch.nn.functional.leaky_relu's default negative_slope
SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1/sqrt(2), gelu (erf)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1/sqrt(2*pi), gelu's density term
SQRT_2_PI = tl.constexpr(0.7978845608028654)  # sqrt(2/pi), gelu_tanh
GELU_C = tl.constexpr(0.044715)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 1 - 2/(e^{2x}+1): e^{2x} = inf gives 1, e^{2x} = 0 gives -1, never inf/inf.
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def activation(x, ACT: tl.constexpr):
    """act(x) for fp32 x."""
    if ACT == "relu":
        y = tl.maximum(x, 0.0)
    elif ACT == "silu":
        y = x * _sigmoid(x)
    elif ACT == "gelu":
        y = 0.5 * x * (1.0 + tl.math.erf(x * SQRT1_2))
    elif ACT == "gelu_tanh":
        y = 0.5 * x * (1.0 + _tanh(SQRT_2_PI * (x + GELU_C * x * x * x)))
    elif ACT == "relu2":
        r = tl.maximum(x, 0.0)
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
        d = tl.where(x > 0.0, 1.0, 0.0)
    elif ACT == "silu":
        s = _sigmoid(x)
        d = s * (1.0 + x * (1.0 - s))
    elif ACT == "gelu":
        cdf = 0.5 * (1.0 + tl.math.erf(x * SQRT1_2))
        d = cdf + x * INV_SQRT_2PI * tl.exp(-0.5 * x * x)
    elif ACT == "gelu_tanh":
        t = _tanh(SQRT_2_PI * (x + GELU_C * x * x * x))
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_PI * (1.0 + 3.0 * GELU_C * x * x)
    elif ACT == "relu2":
        d = 2.0 * tl.maximum(x, 0.0)
    elif ACT == "leaky_relu":
        d = tl.where(x > 0.0, 1.0, LEAKY_SLOPE)
    else:
        tl.static_assert(ACT == "none", "unknown activation")
        d = tl.full(x.shape, 1.0, tl.float32)
    return d


@triton.jit
def dropout_keep(seed_ptr, rows, cols, p):
    """Keep mask for global rows ([BM]) x cols ([BN]: consecutive, starting at a multiple of 8) of an output.

    A function of (seed, global row, global column) only, so the forward and backward may tile differently
    and still agree: Philox4x32-10 keyed by the seed, counter (col // 8, row, 0, 0), gives 128 bits read as
    eight little-endian uint16 draws, draw col % 8 for that column; drop where draw < round(p * 65536).
    One Philox call serves 8 columns (tl.rand would spend one call per element), the cost that made the
    dropout epilogue slow; p is resolved to 1/65536 (FlashAttention's dropout uses 1/256).
    `trifuse.reference.dropout.keep_mask` is the same function in plain torch ops.
    """
    BN: tl.constexpr = cols.shape[0]
    tl.static_assert(BN % 8 == 0, "dropout tiles must be a multiple of 8 columns wide")
    seed = tl.load(seed_ptr)
    first_group = tl.min(cols, axis=0) // 8
    groups = (first_group + tl.arange(0, BN // 8)).to(tl.uint32)
    c0 = groups[None, :] + tl.zeros_like(rows)[:, None].to(tl.uint32)
    c1 = rows.to(tl.uint32)[:, None] + tl.zeros_like(groups)[None, :]
    zero = c0 * 0
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, zero, zero)
    # [.., 2, 2] whose row-major order is w0, w1, w2, w3; then each word's low and high halves.
    words = tl.join(tl.join(w0, w2), tl.join(w1, w3))
    draws = tl.join(words & 0xFFFF, words >> 16)
    threshold = (tl.full((), p, tl.float32) * 65536.0 + 0.5).to(tl.uint32)
    return tl.reshape(draws >= threshold, (rows.shape[0], BN))
