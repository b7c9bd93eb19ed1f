"""Thin nn.Module drop-ins over the functional API."""
from __future__ import annotations

import torch
from torch import nn

from .functional.softmax import log_softmax, softmax


class Softmax(nn.Softmax):
    """Drop-in for torch.nn.Softmax (dim=None picks the last dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softmax(x, -1 if self.dim is None else self.dim)


class LogSoftmax(nn.LogSoftmax):
    """Drop-in for torch.nn.LogSoftmax (dim=None picks the last dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_softmax(x, -1 if self.dim is None else self.dim)
