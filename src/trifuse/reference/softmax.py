"""Softmax oracles: torch's own op in a higher precision, and the naive composition the seeds describe."""
from __future__ import annotations

import torch


def softmax_ref(x: torch.Tensor, dim: int = -1, log: bool = False, dtype=torch.float64) -> torch.Tensor:
    xd = x.to(dtype)
    return torch.log_softmax(xd, dim) if log else torch.softmax(xd, dim)


def naive_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """max, subtract, exp, sum, divide: one kernel each, every intermediate through memory."""
    m = x.amax(dim, keepdim=True)
    e = (x - m).exp()
    return e / e.sum(dim, keepdim=True)
