"""Registered ops with an eager fast path.

A call through a torch.library op costs about 60 us more host time than the Triton launch itself
(torch 2.11 on the H200: 87 us per `torch.ops.trifuse.softmax_fwd` call against 25 us for the raw
launch, scripts/host_breakdown.py), longer than many of these kernels run. `register` makes the triton_op
(what torch.compile, export and opcheck see) and returns a FastOp: when nothing traces (no
torch.compile, no fake or functional tensors, no dispatch mode) it runs the same implementation
directly, under a plain autograd.Function built from the same setup_context and backward.
That direct path may run a `direct` variant of the implementation which returns None where the
registered op returns an empty (0,) stand-in (a registered op's outputs are all tensors, freshly
allocated, ~2 us each on the host), and, where autograd records nothing, an `inference` variant that
skips what only the backward reads (the norms' mean and rstd).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch._C import _functions as _autograd_functions
from torch.autograd import forward_ad
from torch.library import triton_op
from torch.utils._python_dispatch import _get_current_dispatch_mode

try:  # the thread-local switch triton_op itself flips to launch kernels directly on real tensors
    from torch._library.triton import is_wrap_triton_enabled, wrap_triton_enabled
except ImportError:  # pragma: no cover - a torch without the switch: wrap_triton stays on
    wrap_triton_enabled = None

# Argument types that are never tensors: skipped without isinstance (Tensor's metaclass check costs ~1 us).
_SCALARS = frozenset({type(None), bool, int, float, str, torch.dtype})


class _DirectLaunch:
    """Context in which `wrap_triton(kernel)` returns the kernel itself (no tracing wrapper).

    torch's own `set_wrap_triton_enabled` is a generator context manager costing about 3.5 us a call;
    this flips the same thread-local flag directly.
    """

    def __enter__(self):
        if wrap_triton_enabled is not None:
            self.prev = is_wrap_triton_enabled()
            wrap_triton_enabled.value = False

    def __exit__(self, *exc):
        if wrap_triton_enabled is not None:
            wrap_triton_enabled.value = self.prev


def direct_launch() -> _DirectLaunch:
    return _DirectLaunch()


def run_direct(fn: Callable, *args):
    """fn(*args) inside direct_launch(), without a context object: the eager path runs this per call."""
    if wrap_triton_enabled is None:  # pragma: no cover - a torch without the switch
        return fn(*args)
    prev = is_wrap_triton_enabled()
    wrap_triton_enabled.value = False
    try:
        return fn(*args)
    finally:
        wrap_triton_enabled.value = prev


def _first_order_only(name: str, backward: Callable) -> Callable:
    """backward run without a graph; under create_graph=True its gradients are marked so that
    differentiating them again raises a clear error. The backward's kernels have no autograd, so a
    second derivative would otherwise come out partial or missing without a word. torch's
    once_differentiable marks them only when the incoming gradients require grad, which misses the
    common case (the second derivative through the saved inputs)."""
    message = (f"trifuse.{name.split('::')[-1]}: its backward is not differentiable (no second "
               f"derivative); use the torch composition where double backward is needed").encode()

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        with torch.no_grad():
            out = backward(ctx, *grads)
        if not torch.is_grad_enabled():  # plain backward: nothing to mark
            return out
        outs = out if isinstance(out, tuple) else (out,)
        marked = [g.detach().requires_grad_() if g is not None else None for g in outs]
        # The saved inputs ride along so the error node links back to them: autograd.grad(..., inputs)
        # then reaches it and raises the message (unlinked, it would report the inputs "unused").
        linked = [t for t in ctx.saved_tensors if t is not None and t.requires_grad]
        marked = _autograd_functions.DelayedError(message, len(marked) + len(linked))(*marked, *linked)
        marked = (marked if isinstance(marked, tuple) else (marked,))[: len(outs)]
        return tuple(marked) if isinstance(out, tuple) else marked[0]

    return wrapper


def _eager_function(name: str, impl: Callable, setup_context: Callable, backward: Callable):
    """A torch.autograd.Function running impl with the op's own setup_context and backward."""

    def forward(ctx, *args):
        ctx.set_materialize_grads(False)  # as register_autograd: unused outputs' grads stay None
        out = run_direct(impl, *args)
        setup_context(ctx, args, out)
        return out

    body = {"forward": staticmethod(forward), "backward": staticmethod(_first_order_only(name, backward))}
    return type(f"{name.split('::')[-1]}_eager", (torch.autograd.Function,), body)


class FastOp:
    """Callable op: the registered triton_op when tracing, its implementation otherwise."""

    def __init__(self, name: str, op, impl: Callable, setup_context: Callable | None,
                 backward: Callable | None, inference: Callable | None = None):
        self.name = name.split("::")[-1]
        self.op, self.impl = op, impl  # impl: what the eager path runs (register's `direct`)
        self.inference = inference or impl  # the eager path when autograd records nothing
        self.function = _eager_function(name, impl, setup_context, backward) if backward else None

    def __call__(self, *args):
        # One pass over the arguments (this runs on every eager call): any tensor subclass, or anything
        # tracing, goes through the dispatcher; plain tensors note whether autograd needs a graph.
        # (functorch transforms such as vmap: their wrapped tensors look plain, so they are asked for here)
        if (torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None
                or torch._C._are_functorch_transforms_active()):
            return self.op(*args)
        if forward_ad._current_level >= 0:
            self._reject_tangents(args)
        needs_grad = False
        for a in args:
            kind = type(a)
            if kind is torch.Tensor or kind is torch.nn.Parameter:
                needs_grad = needs_grad or a.requires_grad
            elif kind not in _SCALARS and isinstance(a, torch.Tensor):  # isinstance on Tensor is slow
                return self.op(*args)
        if needs_grad and torch.is_grad_enabled():
            if self.function is not None:
                return self.function.apply(*args)
            # A backward op recorded for a double backward (create_graph=True through the registered op,
            # e.g. under a dispatch mode): the dispatcher's autograd node raises if it is differentiated,
            # where the direct run would drop the second-order term silently.
            return self.op(*args)
        return run_direct(self.inference, *args)

    def _reject_tangents(self, args) -> None:
        """Forward-mode AD would drop a dual input's tangent without a word (no op here has a jvp): refuse."""
        for a in args:
            if isinstance(a, torch.Tensor) and forward_ad.unpack_dual(a).tangent is not None:
                raise NotImplementedError(f"trifuse.{self.name}: forward-mode AD (jvp, dual tensors) is not "
                                          f"supported; got an input with a tangent")


def register(name: str, impl: Callable, *, setup_context: Callable | None = None,
             backward: Callable | None = None, direct: Callable | None = None,
             inference: Callable | None = None) -> FastOp:
    """triton_op(name) over impl (+ register_autograd), wrapped in a FastOp that runs `direct` (default
    impl) when nothing traces. direct returns what impl returns, None in place of impl's (0,) stand-ins;
    setup_context and backward take either. inference (default direct): the same, run when no graph is
    recorded; it may return None for outputs only the backward reads."""
    op = triton_op(name, impl, mutates_args={})
    if backward is not None:
        op.register_autograd(backward, setup_context=setup_context)
    return FastOp(name, op, direct or impl, setup_context, backward, inference)
