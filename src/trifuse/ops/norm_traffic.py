"""LayerNorm / RMSNorm traffic models: the least bytes an op moves (the bench's GB/s and roofline rows)
and what eager PyTorch's unfused composition moves."""


def norm_bytes(m: int, n: int, elem_size: int, direction: str = "fwd", *, input_bias: bool = False,
               residual: bool = False, weight: bool = True, bias: bool = False) -> int:
    """Least traffic: every input read once, every output written once (vectors of N included).

    fwd: reads x (+ residual), writes y (+ h). bwd: reads x or h and dy (+ dh_out), writes dx
    (+ dresidual, which is dx itself and so not written again). Weight, bias and input bias add
    N-element reads (forward) or writes (backward).
    """
    rows = m * n * elem_size
    vec = n * elem_size
    vecs = (weight + bias + input_bias) * vec
    fwd = (2 + 2 * residual) * rows + vecs
    bwd = (3 + residual) * rows + vecs + (weight + input_bias) * vec  # reads weight and input_bias
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


def naive_norm_bytes(m: int, n: int, elem_size: int, direction: str = "fwd", *, input_bias: bool = False,
                     residual: bool = False, **kw) -> int:
    """Forward traffic of eager PyTorch's composition, the adds as separate passes before the norm.

    x + input_bias writes t and the norm reads t back: 2 more full passes; with a residual, h is
    written anyway and read back by the norm: 1 more. The backward is counted as the fused one.
    """
    extra = (2 * input_bias + residual) * m * n * elem_size if direction != "bwd" else 0
    return norm_bytes(m, n, elem_size, direction, input_bias=input_bias, residual=residual, **kw) + extra
