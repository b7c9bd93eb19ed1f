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
def dropout_keep(seed_ptr, rows, cols, N, p):
    """Keep mask for rows (int64, [BM]) x cols ([BN]) of an (M, N) output.

    A function of (seed, global row, global column) only: the Philox offset is row * N + col in int64,
    so the forward and backward may tile differently and still agree. Drop where u < p, u in [0, 1).
    """
    seed = tl.load(seed_ptr)
    offsets = rows.to(tl.int64)[:, None] * N + cols.to(tl.int64)[None, :]
    u = tl.rand(seed, offsets)
    return u >= tl.full((), p, tl.float32)
