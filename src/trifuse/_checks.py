"""Typed input validation shared by every op: errors name what was expected and what came."""
from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Exact types the one-pass eager checks (functional `_valid`s) accept: a subclass takes the full checks.
PLAIN_TENSORS = frozenset({torch.Tensor, torch.nn.Parameter})


def check_bool(name: str, arg: str, value: object) -> bool:
    """A flag as a Python bool: bool or numpy.bool_ (not an int or a string, whose truth would be a guess)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"trifuse.{name}: {arg} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_tensor(name: str, arg: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"trifuse.{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_float(name: str, arg: str, t: torch.Tensor, dtypes: Iterable[torch.dtype] = FLOAT_DTYPES) -> None:
    check_tensor(name, arg, t)
    if t.dtype not in dtypes:
        dtypes = tuple(dtypes)
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"trifuse.{name}: {arg} must have dtype in ({names}), got {t.dtype}")


def check_same_dtype(name: str, **tensors: torch.Tensor | None) -> None:
    dtype = None
    for t in tensors.values():  # the common case, one dtype, without building the error's dicts
        if t is not None:
            if dtype is None:
                dtype = t.dtype
            elif t.dtype != dtype:
                break
    else:
        return
    present = {k: v for k, v in tensors.items() if v is not None}
    dtypes = {v.dtype for v in present.values()}
    if len(dtypes) > 1:
        got = ", ".join(f"{k}={v.dtype}" for k, v in present.items())
        raise TypeError(f"trifuse.{name}: tensors must share one dtype, got {got}")


def check_shape(name: str, arg: str, t: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"trifuse.{name}: {arg} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def check_ndim(name: str, arg: str, t: torch.Tensor, ndim: int | tuple[int, ...]) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if t.dim() not in allowed:
        want = " or ".join(map(str, allowed))
        raise ValueError(f"trifuse.{name}: {arg} must have {want} dims, got {t.dim()}")


class DimError(ValueError, IndexError):
    """A dim out of range: a ValueError like every other bad argument, and an IndexError as torch raises
    for it (numpy's AxisError is both too)."""


def normalize_dim(name: str, dim: int, ndim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):  # numpy integers too, as torch takes
        raise TypeError(f"trifuse.{name}: dim must be an int, got {type(dim).__name__}")
    dim = int(dim)
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise DimError(f"trifuse.{name}: dim {dim} out of range for a tensor of rank {ndim} "
                       f"(expected in [{-rank}, {rank - 1}])")
    return dim % rank
