"""trifuse.softmax and trifuse.log_softmax: any rank, any dim, fp32/fp16/bf16."""
from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, PLAIN_TENSORS, check_float, check_tensor, normalize_dim
from ..library.softmax import softmax_rows
from ..runtime import check_kernel_device, kernel_devices_ok
from ._rows import as_rows, from_rows


def _check(name: str, x, dim) -> None:
    """Every check of the user's input, each raising its typed error."""
    check_tensor(name, "x", x)
    check_float(name, "x", x)
    normalize_dim(name, dim, x.dim())
    check_kernel_device(name, x)


def _valid(x, dim) -> bool:
    """True only when every check of _check passes: the common eager call in one pass."""
    if type(x) not in PLAIN_TENSORS or x.dtype not in FLOAT_DTYPES or type(dim) is not int:
        return False
    rank = max(x.dim(), 1)
    return -rank <= dim < rank and kernel_devices_ok(x)


def _softmax(name: str, x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    if torch.compiler.is_compiling() or not _valid(x, dim):
        _check(name, x, dim)
    ndim = x.dim()
    if ndim == 0:
        return softmax_rows(x.reshape(1, 1), log).reshape(())
    dim = int(dim) % ndim  # int(): a numpy integer dim passes the checks, as torch takes it
    last = dim == ndim - 1
    moved = x if last else x.movedim(dim, -1)
    y = from_rows(softmax_rows(as_rows(moved, moved.shape[-1]), log), moved.shape)
    # Laid out as torch's result (contiguous), so that callers' .view() works as it does on torch's.
    return y if last else y.movedim(-1, dim).contiguous()


def _cast(name: str, x, dtype):
    """x cast to `dtype` before the op, as torch.softmax's dtype argument does (None: unchanged)."""
    if dtype is None:
        return x
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"trifuse.{name}: dtype must be a torch.dtype or None, got {type(dtype).__name__}")
    check_tensor(name, "x", x)
    return x.to(dtype)


def softmax(x: torch.Tensor, dim: int = -1, dtype: torch.dtype | None = None) -> torch.Tensor:
    """softmax(x) along `dim`; matches torch.softmax, NaN and inf included. dtype: x is cast to it first."""
    return _softmax("softmax", _cast("softmax", x, dtype), dim, log=False)


def log_softmax(x: torch.Tensor, dim: int = -1, dtype: torch.dtype | None = None) -> torch.Tensor:
    """log_softmax(x) along `dim`; matches torch.log_softmax, NaN and inf included. dtype: x is cast to it
    first."""
    return _softmax("log_softmax", _cast("log_softmax", x, dtype), dim, log=True)
