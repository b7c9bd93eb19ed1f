"""Activation memory: what the autograd graph keeps for the backward while a forward runs."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def autograd_saved_bytes(forward: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """(bytes, forward(*args)): the distinct storages autograd saves for the backward while forward runs.

    Each storage counts once, whoever saved it and however many views of it were saved; inputs and
    weights the graph keeps count too, so two implementations of one layer compare as a whole.
    """
    storages: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[(storage.data_ptr(), str(t.device))] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward(*args)
    return sum(storages.values()), out
