"""The contract every op's benchmark suite fulfils; the harness knows nothing else about an op."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Fn = Callable[[], Any]


class Unavailable(Exception):
    """A provider that cannot run here (peer not installed, backend not supported, out of memory)."""


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]
    dtype: torch.dtype
    direction: str = "fwd"  # "fwd", "bwd" (backward alone) or "fwd+bwd"
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    @property
    def label(self) -> str:
        dims = "x".join(map(str, self.shape))
        extra = " ".join(f"{k}={v}" for k, v in self.params)
        return f"{dims} {extra}".strip()

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")


@dataclass(frozen=True)
class Work:
    """The least traffic and arithmetic the op needs: every input read once, every output written once."""

    bytes: float = 0.0
    flops: float = 0.0


@dataclass
class Suite:
    """One op's benchmark: cases, inputs, providers, an fp32 reference and a work model.

    providers(case) maps a provider name to a builder: builder(inputs) -> fn, where fn() runs the work
    once and returns the tensor(s) compared against reference(case, inputs). A builder raises
    Unavailable when the provider cannot run here. The first provider is trifuse's.
    """

    name: str
    bound: str  # "memory" (GB/s against copy bandwidth) or "compute" (TFLOP/s against cuBLAS)
    cases: Callable[..., list[Case]]
    inputs: Callable[[Case, torch.device], dict]
    providers: Callable[[Case], dict[str, Callable[[dict], Fn]]]
    reference: Callable[[Case, dict], Any]
    work: Callable[[Case], Work]
    naive_bytes: Callable[[Case], float] | None = None  # traffic of the unfused composition
    extras: Callable[[Case], dict] | None = None  # more per-case columns (e.g. intermediate bytes saved)
    measured: Callable[[Case, dict], dict] | None = None  # per-case columns measured once on the inputs, untimed
    shape_dims: tuple[str, ...] = ()  # the dims of a case's shape, in order (the CLI's --shapes items)
    notes: list[str] = field(default_factory=list)


def parse_shapes(text: str | None) -> list[tuple[int, ...]] | None:
    """'4096x4096,8192x512' -> [(4096, 4096), (8192, 512)]."""
    if text is None:
        return None
    shapes = []
    for item in text.split(","):
        try:
            shapes.append(tuple(int(d) for d in item.lower().split("x")))
        except ValueError:
            raise ValueError(f"--shapes: expected items like 4096x4096, got {item!r}") from None
    return shapes
