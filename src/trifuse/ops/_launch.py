"""Host-side helpers shared by the launchers, kept cheap: they run on every call.

`triton.cdiv` and `triton.next_power_of_2` are constexpr functions whose host call costs about 4 us
(argument unwrapping); `wrap_triton` imports modules on every call. Launch-bound shapes pay for each.
`FastKernel` replaces Triton's per-call binder and cache-key work (about 20 us a launch on the H200's
host) with a lookup keyed by the same facts Triton specializes on.
"""
from __future__ import annotations

import functools

import torch
from torch.library import wrap_triton
from triton import knobs
from triton.runtime.jit import JITFunction

from ..runtime import INTERPRET

try:  # the thread-local flag triton_op clears on real tensors (see library/eager.py)
    from torch._library.triton import is_wrap_triton_enabled
except ImportError:  # pragma: no cover - a torch without the flag: always wrap
    def is_wrap_triton_enabled() -> bool:
        return True

try:
    from torch._C import _cuda_getCurrentRawStream as _raw_stream
except ImportError:  # pragma: no cover - a CPU-only torch build
    _raw_stream = None

_INT32 = range(-2**31, 2**31)
_TENSOR = torch.Tensor


def cdiv(a, b):
    """Ceiling division; works on ints and on SymInts under torch.compile."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 << (int(n) - 1).bit_length() if n > 1 else 1


@functools.cache
def device_props(index: int) -> tuple[tuple[int, int], int]:
    """(compute capability, SM count) of CUDA device `index`, read once: the property query costs
    microseconds, and launchers size persistent grids from it on every call.

    ROCm builds report AMD gfx9 parts as capability 9.x, which the NVIDIA-only paths (TMA, the Gluon GEMM,
    programmatic dependent launch) test for: there the capability is (0, 0), the portable kernels' case."""
    p = torch.cuda.get_device_properties(index)
    return (0, 0) if torch.version.hip else (p.major, p.minor), p.multi_processor_count


def _hooked(hook) -> bool:
    """A launch hook is set (a profiler's): Triton 3.6 keeps an always-present, usually empty chain."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _arg_key(value):
    """What Triton specializes a runtime argument on; _UNKNOWN for a type the fast path does not know."""
    kind = type(value)
    if kind is torch.Tensor or kind is torch.nn.Parameter:
        return value.dtype, value.data_ptr() & 15 == 0
    if kind is int:  # Triton: == 1 becomes a constant, % 16 an alignment hint, the range picks i32/i64
        return 1 if value == 1 else (value & 15 == 0, value in _INT32)
    if kind is float or kind is bool or value is None:
        return kind
    if kind.__name__ == "TensorDescriptor" and type(value.base) is torch.Tensor:
        # A host tensor descriptor specializes on its dtype, block shape and shared layout (mangle_type:
        # "tensordesc<bf16[1, 1, 64, 128],NVMMASharedLayout(...)>"); the launcher builds its CUtensorMap
        # from the base, shape and strides on every launch.
        return kind, value.base.dtype, tuple(value.block_shape), getattr(value, "layout", None)
    return _UNKNOWN


_UNKNOWN = object()


class FastKernel:
    """`kernel[grid](*args, **meta)` that looks up Triton's compiled kernel by a cheap key.

    The key holds, per positional argument, what Triton's binder specializes on (tensor dtype and
    16-byte alignment; int == 1, % 16 and 32-bit range; constexpr values), plus the keyword meta
    (constexprs, num_warps, num_stages) and the device. A key is at least as fine as Triton's own, so
    a hit launches exactly the kernel Triton would. Anything unusual (an argument type outside the
    table, launch hooks such as a profiler's) takes Triton's own path.
    """

    __slots__ = ("cache", "constexpr_pos", "first_constexpr", "kernel", "order")

    def __init__(self, kernel: JITFunction):
        self.kernel = kernel
        self.constexpr_pos = frozenset(kernel.constexprs)
        self.first_constexpr = min(kernel.constexprs, default=len(kernel.params))
        self.order = [(p.name, p.default) for p in kernel.params]
        self.cache = {}

    def __getitem__(self, grid):
        return lambda *args, **meta: self.launch(grid, args, meta)

    def _key(self, args, meta):
        """The cache key, or None when an argument needs Triton's own binder."""
        if len(args) > self.first_constexpr:  # a constexpr passed by position: key on its value
            key = (tuple(meta.items()), *[v if i in self.constexpr_pos else _arg_key(v) for i, v in enumerate(args)])
        else:  # the common case, inlined: this runs on every launch
            key = (tuple(meta.items()), *[
                (v.dtype, v.data_ptr() & 15 == 0) if type(v) is _TENSOR
                else (1 if v == 1 else (v & 15 == 0, v in _INT32)) if type(v) is int
                else _arg_key(v) for v in args])
        return None if _UNKNOWN in key else key

    def launch(self, grid, args, meta):
        if _hooked(knobs.runtime.launch_enter_hook) or _hooked(knobs.runtime.launch_exit_hook):
            return self.kernel[grid](*args, **meta)
        try:
            key = self._key(args, meta)
            device = torch.cuda.current_device()
            entry = self.cache.get((device, key)) if key is not None else None
        except TypeError:  # an unhashable meta value
            return self.kernel[grid](*args, **meta)
        if entry is None:
            compiled = self.kernel[grid](*args, **meta)
            if key is not None and compiled is not None:
                self.cache[(device, key)] = self._entry(compiled, len(args), meta)
            return None
        launch, head, tail = entry
        launch(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
               _raw_stream(device), *head, *args, *tail)
        return None

    def _entry(self, compiled, n_args, meta):
        """(launch, head, tail): launch(grid, stream, *head, *args, *tail) starts the kernel.

        The tail holds the constexprs not passed by position; the key includes meta, so they are fixed.
        Without scratch memory the C launch is called directly (CudaLauncher.__call__ only allocates it).
        """
        if hasattr(compiled, "result"):  # an asynchronous compile's future
            compiled = compiled.result()
        run = compiled.run  # loads the module and binds the launcher once
        tail = tuple(meta.get(name, default) for name, default in self.order[n_args:])
        meta_args = (compiled.packed_metadata, None, None, None)  # no launch metadata or hooks
        if getattr(run, "global_scratch_size", 1) == 0 and getattr(run, "profile_scratch_size", 1) == 0:
            head = (compiled.function, run.launch_cooperative_grid, run.launch_pdl, None, None, *meta_args)
            return run.launch, head, tail
        return run, (compiled.function, *meta_args), tail


_FAST: dict[int, FastKernel] = {}


def launcher(kernel):
    """wrap_triton(kernel) while tracing; on the eager fast path a FastKernel (compiled GPU) or the
    kernel itself (interpreter)."""
    if is_wrap_triton_enabled():
        return wrap_triton(kernel)
    return eager_launcher(kernel)


def eager_launcher(kernel):
    """A FastKernel for kernels only ever launched eagerly (the Gluon ones: wrap_triton takes Triton
    kernels only), whatever the wrap flag says; the kernel itself in the interpreter."""
    if INTERPRET or _raw_stream is None or not isinstance(kernel, JITFunction):
        return kernel
    fast = _FAST.get(id(kernel))
    if fast is None:
        fast = _FAST[id(kernel)] = FastKernel(kernel)
    return fast
