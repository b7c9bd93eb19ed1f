"""Host-side helpers shared by the launchers, kept cheap: they run on every call.

`triton.cdiv` and `triton.next_power_of_2` are constexpr functions whose host call costs about 4 us
(argument unwrapping); `wrap_triton` imports modules on every call. Launch-bound shapes pay for each.
"""
from __future__ import annotations

from torch.library import wrap_triton

try:  # the thread-local flag triton_op clears on real tensors (see library/eager.py)
    from torch._library.triton import is_wrap_triton_enabled
except ImportError:  # pragma: no cover - a torch without the flag: always wrap
    def is_wrap_triton_enabled() -> bool:
        return True


def cdiv(a, b):
    """Ceiling division; works on ints and on SymInts under torch.compile."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 << (int(n) - 1).bit_length() if n > 1 else 1


def launcher(kernel):
    """wrap_triton(kernel) while tracing; the kernel itself on the eager fast path."""
    return wrap_triton(kernel) if is_wrap_triton_enabled() else kernel
