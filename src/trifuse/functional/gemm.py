"""trifuse.gemm and trifuse.linear: dropout(act(a @ b + bias)) + residual in one kernel.

fp32 operands: the product runs in tf32 when torch would (torch.get_float32_matmul_precision() is
"high" or "medium", or torch.backends.cuda.matmul.allow_tf32 is set), exact fp32 otherwise, so a
FusedLinear gives the numerics nn.Linear gives under the same settings. Call
torch.set_float32_matmul_precision("high") to allow tf32 (torch's default, "highest", is exact).
"""
from __future__ import annotations

import numbers

import torch

from .._checks import FLOAT_DTYPES, PLAIN_TENSORS, check_bool, check_float, check_same_dtype, check_tensor
from ..library.gemm import gemm_fwd
from ..ops.gemm import ACTIVATIONS
from ..runtime import check_kernel_device, kernel_devices_ok
from ._rows import as_rows, from_rows

_ACTS = frozenset(ACTIVATIONS)


def _tf32(dtype: torch.dtype) -> bool:
    if dtype != torch.float32:
        return False
    return torch.get_float32_matmul_precision() != "highest" or bool(torch.backends.cuda.matmul.allow_tf32)


def _check_args(name: str, activation: str, dropout_p: float, out_dtype, p_name: str = "dropout_p") -> None:
    """p_name: what the caller calls the dropout probability (FusedLinear: dropout)."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"trifuse.{name}: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"trifuse.{name}: {p_name} must be a float, got {type(dropout_p).__name__}")
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"trifuse.{name}: {p_name} must be in [0, 1), got {dropout_p}")
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in FLOAT_DTYPES)
        raise TypeError(f"trifuse.{name}: out_dtype must be one of ({names}) or None, got {out_dtype}")


def _seed_tensor(seed, device: torch.device) -> torch.Tensor:
    """The Philox seed as an int64 tensor (1,): drawn from torch's generator for the device when None
    (so torch.manual_seed makes it reproducible, and torch.compile traces it without a graph break)."""
    if seed is None:
        return torch.randint(0, 2**63 - 1, (1,), device=device, dtype=torch.int64)  # 63 bits: no repeats
    if isinstance(seed, torch.Tensor):
        # A copy: the backward reads it, and the caller may step its seed tensor in place meanwhile.
        return seed.reshape(1).to(device=device, dtype=torch.int64, copy=True)
    # The int's 64-bit two's complement, as a seed tensor holds it: -1 and torch.tensor(-1) give one mask.
    value = (int(seed) + 2**63) % 2**64 - 2**63
    if torch.compiler.is_compiling() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return _fill_seed(value, device)
    # An int seed's tensor is made once and kept (never written, so sharing it is safe): the fill kernel
    # cost ~2.5 us of device time a call, 20% of a 1024^3 GEMM's (scripts/tune_gemm.py --dropout against
    # the bench's rows). Outside a CUDA-graph capture, whose pool the kept tensor must not come from.
    key = (device, value)
    t = _INT_SEEDS.pop(key, None)
    if t is None:
        t = _fill_seed(value, device)
        if len(_INT_SEEDS) >= _INT_SEEDS_KEPT:
            del _INT_SEEDS[next(iter(_INT_SEEDS))]  # the least recently used
    _INT_SEEDS[key] = t
    return t


_INT_SEEDS: dict[tuple[torch.device, int], torch.Tensor] = {}
_INT_SEEDS_KEPT = 64


def _fill_seed(value: int, device: torch.device) -> torch.Tensor:
    # torch.full, not torch.tensor([seed], device=...): the latter copies from pageable host memory, which
    # waits for the GPU's queue to drain (0.12 ms more a call at 4096^3 on the H200); full is one kernel.
    return torch.full((1,), value, dtype=torch.int64, device=device)


def _check_seed(name: str, seed) -> None:
    """An int, a one-element integer tensor or None; checked whether or not dropout is on."""
    if isinstance(seed, torch.Tensor):
        if seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
            raise TypeError(f"trifuse.{name}: a seed tensor must have an integer dtype, got {seed.dtype}")
        if seed.numel() != 1:
            raise ValueError(f"trifuse.{name}: a seed tensor must hold one element, got shape {tuple(seed.shape)}")
        if seed.device.type == "meta":
            raise ValueError(f"trifuse.{name}: a seed tensor must hold a value (on the CPU or the input's "
                             f"device), got one on the meta device")
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"trifuse.{name}: seed must be an int, an integer tensor or None, got "
                        f"{type(seed).__name__}")


def _check(name: str, a_name: str, b_name: str, a, b, bias, residual, activation, dropout_p, out_dtype) -> None:
    """Every check of the user's input, each raising its typed error."""
    check_tensor(name, a_name, a)
    check_tensor(name, b_name, b)
    check_float(name, a_name, a)
    check_float(name, b_name, b)
    for arg, t in (("bias", bias), ("residual", residual)):
        if t is not None:
            check_tensor(name, arg, t)
            check_float(name, arg, t)
    check_same_dtype(name, **{a_name: a, b_name: b, "bias": bias})
    _check_args(name, activation, dropout_p, out_dtype)
    if b.dim() != 2:
        raise ValueError(f"trifuse.{name}: {b_name} must have 2 dims, got {b.dim()}")
    if a.dim() < 1:
        raise ValueError(f"trifuse.{name}: {a_name} must have at least 1 dim, got a 0-dim tensor")
    K = a.shape[-1]
    if b.shape[0] != K:
        want = f"weight of shape (N, {K})" if b_name == "weight" else f"b of shape ({K}, N)"
        got = tuple(b.t().shape) if b_name == "weight" else tuple(b.shape)
        raise ValueError(f"trifuse.{name}: {a_name} has inner dim {K}, so expected {want}, got {got}")
    N = b.shape[1]
    if bias is not None and tuple(bias.shape) != (N,):
        raise ValueError(f"trifuse.{name}: bias must have shape ({N},), got {tuple(bias.shape)}")
    out_shape = (*a.shape[:-1], N)
    final_dtype = out_dtype if out_dtype is not None else a.dtype
    if residual is not None:
        if tuple(residual.shape) != out_shape:
            raise ValueError(f"trifuse.{name}: residual must have the output's shape {out_shape}, "
                             f"got {tuple(residual.shape)}")
        if residual.dtype != final_dtype:
            raise TypeError(f"trifuse.{name}: residual must have the output dtype {final_dtype}, "
                            f"got {residual.dtype}")
    check_kernel_device(name, a, b, bias, residual)


def _valid(a, b, bias, residual, activation, dropout_p, out_dtype) -> bool:
    """True only when every check of _check passes: the common eager call (plain tensors, a float
    dropout_p) in one pass, without _check's per-check calls (~25 us a call). False sends the call
    through _check, which raises the typed error or passes (tensor subclasses, an int dropout_p...)."""
    if type(a) not in PLAIN_TENSORS or type(b) not in PLAIN_TENSORS:
        return False
    if type(activation) is not str or activation not in _ACTS:
        return False
    if type(dropout_p) is not float or not 0.0 <= dropout_p < 1.0:
        return False
    dtype = a.dtype
    if dtype not in FLOAT_DTYPES or b.dtype is not dtype:
        return False
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        return False
    a_shape, b_shape = a.shape, b.shape
    if len(b_shape) != 2 or not a_shape or b_shape[0] != a_shape[-1]:
        return False
    if bias is not None and (type(bias) not in PLAIN_TENSORS or bias.dtype is not dtype
                             or bias.shape != b_shape[1:]):
        return False
    if residual is not None and (type(residual) not in PLAIN_TENSORS
                                 or residual.dtype is not (out_dtype or dtype)
                                 or residual.shape != (*a_shape[:-1], b_shape[1])):
        return False
    return kernel_devices_ok(a, b, bias, residual)


def _gemm(name: str, a, b, bias, activation, dropout_p, seed, residual, out_dtype, recompute, b_name="b",
          training=True):
    if torch.compiler.is_compiling() or not _valid(a, b, bias, residual, activation, dropout_p, out_dtype):
        _check(name, "a" if b_name == "b" else "x", b_name, a, b, bias, residual, activation, dropout_p, out_dtype)
    if seed is not None:
        _check_seed(name, seed)
    training, recompute = check_bool(name, "training", training), check_bool(name, "recompute", recompute)
    p = float(dropout_p) if training else 0.0
    K, N = a.shape[-1], b.shape[1]
    out_shape = (*a.shape[:-1], N)
    seed_t = _seed_tensor(seed, a.device) if p > 0.0 else None
    a2 = as_rows(a, K)
    res2 = as_rows(residual, N) if residual is not None else None
    needs_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or (
        bias is not None and bias.requires_grad) or (residual is not None and residual.requires_grad))
    if bias is not None:
        bias = bias.contiguous()  # N elements; the kernels read it with unit stride
    save_pre = needs_grad and activation != "none" and not recompute
    out, _ = gemm_fwd(a2, b, bias, res2, seed_t, activation, p, out_dtype, save_pre, _tf32(a.dtype),
                      bool(recompute))
    return from_rows(out, out_shape)


def gemm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, *, activation: str = "none",
         dropout_p: float = 0.0, seed: int | torch.Tensor | None = None, residual: torch.Tensor | None = None,
         out_dtype: torch.dtype | None = None, recompute: bool = False) -> torch.Tensor:
    """dropout(act(a @ b + bias)) + residual; a (..., M, K), b (K, N), bias (N,), residual (..., M, N).

    Dropout (dropout_p > 0) keeps an element with probability 1 - dropout_p and scales it by
    1/(1 - dropout_p); the drop probability is resolved to 1/65536 (below 2**-17 nothing drops). The mask
    is a function of (seed, row, col) only (`trifuse.reference.dropout.keep_mask`), the seed drawn from
    torch's generator when None, and the backward regenerates it (it is never stored). recompute=True
    saves memory in training: the backward recomputes a @ b + bias in a GEMM instead of keeping it.
    """
    return _gemm("gemm", a, b, bias, activation, dropout_p, seed, residual, out_dtype, recompute)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           activation: str = "none", dropout_p: float = 0.0, training: bool = True,
           seed: int | torch.Tensor | None = None, residual: torch.Tensor | None = None,
           recompute: bool = False) -> torch.Tensor:
    """dropout(act(x @ weight.T + bias)) + residual with weight (N, K) as torch.nn.Linear keeps it (read
    through its transposed strides, no copy). training=False switches dropout off."""
    check_tensor("linear", "weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"trifuse.linear: weight must have 2 dims (out_features, in_features), "
                         f"got {weight.dim()}")
    return _gemm("linear", x, weight.t(), bias, activation, dropout_p, seed, residual, None, recompute, "weight",
                 training)
