"""Batch dims flattened to the (rows, columns) tensors the registered ops take, and back again."""
from __future__ import annotations

import math

import torch


def as_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """t (..., n) as (rows, n): a view whenever one (row, column) stride pair addresses the rows, a copy
    otherwise. A 2-D t is returned itself: reshape would add a view node for autograd to walk."""
    return t if t.dim() == 2 else t.reshape(math.prod(t.shape[:-1]), n)


def from_rows(y: torch.Tensor, shape) -> torch.Tensor:
    """An op's (rows, n) result viewed as `shape`; y itself when it already has that rank."""
    return y if y.dim() == len(shape) else y.view(shape)
