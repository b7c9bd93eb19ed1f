"""Thin nn.Module drop-ins over the functional API."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ._checks import check_bool
from .functional import norm as _norm
from .functional.softmax import log_softmax, softmax


def _implicit_dim(name: str, x: torch.Tensor) -> int:
    """torch's legacy choice for dim=None (torch.nn.functional._get_softmax_dim), with its deprecation
    warning: dim 0 for 0-, 1- and 3-D inputs, else dim 1."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include "
                  "dim=X as an argument.", stacklevel=3)
    return 0 if x.dim() in (0, 1, 3) else 1


class Softmax(nn.Softmax):
    """Drop-in for torch.nn.Softmax, dim=None included (torch's legacy choice of dim, with its warning)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softmax(x, _implicit_dim("softmax", x) if self.dim is None else self.dim)


class LogSoftmax(nn.LogSoftmax):
    """Drop-in for torch.nn.LogSoftmax, dim=None included (as Softmax)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_softmax(x, _implicit_dim("log_softmax", x) if self.dim is None else self.dim)


def _flat_last(x: torch.Tensor, shape: tuple[int, ...], cls: str) -> torch.Tensor:
    """x with its trailing `shape` dims merged into one (a norm over k dims = over their product)."""
    k = len(shape)
    if tuple(x.shape[x.dim() - k:]) != tuple(shape) or x.dim() < k:
        raise ValueError(f"trifuse.nn.{cls}: expected input with trailing dims {tuple(shape)}, "
                         f"got shape {tuple(x.shape)}")
    return x if k == 1 else x.reshape(*x.shape[:x.dim() - k], -1)


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.reshape(-1) if t is not None else None


class LayerNorm(nn.LayerNorm):
    """Drop-in for torch.nn.LayerNorm (same arguments, parameters and state_dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(self.normalized_shape)
        y = _norm.layer_norm(_flat_last(x, shape, "LayerNorm"), _flat(self.weight), _flat(self.bias), self.eps)
        return y.view(x.shape)


class RMSNorm(nn.RMSNorm):
    """Drop-in for torch.nn.RMSNorm; eps=None uses the machine epsilon of the compute type (fp32, also for
    16-bit inputs), as torch does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(self.normalized_shape)
        y = _norm.rms_norm(_flat_last(x, shape, "RMSNorm"), _flat(self.weight), self.eps)
        return y.view(x.shape)


class FusedLinear(nn.Linear):
    """Drop-in for nn.Linear, optionally followed by an activation (and dropout), in one fused GEMM.

    nn.Linear's arguments in nn.Linear's order (in_features, out_features, bias, device, dtype); the fused
    extras (activation, default "none"; dropout; recompute) are keyword-only. Same parameters as nn.Linear
    (weight (out_features, in_features), bias), so state_dicts load both ways. Dropout applies only in
    training mode (self.training). recompute=True makes the backward recompute x @ W.T + b instead of
    keeping it (less activation memory, one more GEMM).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 activation: str = "none", dropout: float = 0.0, recompute: bool = False) -> None:
        from .functional import gemm as _gemm

        _gemm._check_args("FusedLinear", activation, dropout, None, p_name="dropout")
        recompute = check_bool("FusedLinear", "recompute", recompute)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation = activation
        self.dropout = float(dropout)
        self.recompute = recompute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .functional.gemm import linear

        w, b = self.weight, self.bias
        # Meta tensors have no autocast state to ask about (linear rejects them with its device error); fp64
        # inputs autocast leaves alone.
        if (isinstance(x, torch.Tensor) and x.device.type != "meta" and x.dtype != torch.float64
                and torch.is_autocast_enabled(x.device.type)):
            # As nn.Linear under autocast: input, weight and bias cast to autocast's 16-bit dtype (the casts
            # are differentiable, so gradients reach the fp32 parameters in their dtype).
            dtype = torch.get_autocast_dtype(x.device.type)
            x, w = x.to(dtype), w.to(dtype)
            b = b.to(dtype) if b is not None else None
        return linear(x, w, b, activation=self.activation, dropout_p=self.dropout, training=self.training,
                      recompute=self.recompute)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, activation={self.activation!r}, dropout={self.dropout}, "
                f"recompute={self.recompute}")
