"""Shared provider helpers: torch.compile wrapping, backward timing, optional peers."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch

from .suite import Fn, Unavailable

# Compiled graphs dynamo may keep per function: the norm suite compiles one eager function for ~14 (shape,
# direction) pairs; past the limit dynamo runs the function eagerly.
COMPILE_RECOMPILE_LIMIT = 1024


def compiled(fn: Callable, **kwargs) -> Callable:
    """torch.compile(fn, dynamic=False); Unavailable in the interpreter, where Inductor has no GPU to target.

    Static shapes: every case gets kernels specialized to its shape, as a fixed-shape training step does.
    With the default (dynamic=None) a function's second shape recompiles it shape-generic and every later
    case timed Inductor's dynamic-shape kernel (H100, LN 8192^2 bf16 forward 220 us in the bench against
    88.5 us specialized)."""
    from ..runtime import INTERPRET

    if INTERPRET:
        raise Unavailable("torch.compile needs a GPU here")
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILE_RECOMPILE_LIMIT)
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit,
                                                    COMPILE_RECOMPILE_LIMIT)
    # The backward rows replay one graph (retain_graph=True), which a compiled backward refuses when
    # AOTAutograd donates its saved buffers; donation only saves memory, so turn it off.
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    return torch.compile(fn, **{"dynamic": False, **kwargs})


def backward_fn(forward: Callable[[], torch.Tensor | Sequence[torch.Tensor]],
                wrt: Sequence[torch.Tensor], grad_out: torch.Tensor | Sequence[torch.Tensor]) -> Fn:
    """Runs forward once, then returns fn() that times the backward alone (graph retained)."""
    out = forward()
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    grads = list(grad_out) if isinstance(grad_out, (tuple, list)) else [grad_out]

    def fn():
        return torch.autograd.grad(outs, list(wrt), grads, retain_graph=True)

    return fn


def fwd_bwd_fn(forward: Callable[[], torch.Tensor | Sequence[torch.Tensor]], wrt: Sequence[torch.Tensor],
               grad_out: torch.Tensor | Sequence[torch.Tensor]) -> Fn:
    """fn() runs forward and backward and returns the gradients."""
    grads = list(grad_out) if isinstance(grad_out, (tuple, list)) else [grad_out]

    def fn():
        out = forward()
        return torch.autograd.grad(list(out) if isinstance(out, (tuple, list)) else [out], list(wrt), grads)

    return fn


def grad_fn(direction: str, forward: Callable[[], torch.Tensor | Sequence[torch.Tensor]],
            wrt: Sequence[torch.Tensor], grad_out: torch.Tensor | Sequence[torch.Tensor]) -> Fn:
    """The timed function of a backward direction: "bwd" times the backward alone, "fwd+bwd" both passes
    (the op's work model counts both there)."""
    if direction == "bwd":
        return backward_fn(forward, wrt, grad_out)
    if direction == "fwd+bwd":
        return fwd_bwd_fn(forward, wrt, grad_out)
    raise ValueError(f"grad_fn: direction must be 'bwd' or 'fwd+bwd', got {direction!r}")


def peer(module: str, attr: str):
    """An attribute of an optional peer package, or Unavailable when it is not installed."""
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:  # noqa: BLE001 - ImportError, or a peer that fails to import against this torch
        raise Unavailable(f"{module}.{attr} not available ({type(e).__name__})") from None


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)
