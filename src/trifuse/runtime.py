"""Where kernels run: compiled on a CUDA GPU, or in Triton's CPU interpreter.

Triton decides at decoration time whether `@triton.jit` builds a compiled or an interpreted
function, so the mode is read once, when trifuse is imported. The test suite and the CLI set
TRITON_INTERPRET=1 themselves on machines without a GPU; a library import never changes it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def cache_dir() -> Path:
    """Where trifuse keeps measured ceilings and autotuning results ($TRIFUSE_CACHE_DIR overrides)."""
    root = os.environ.get("TRIFUSE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "trifuse")
    return Path(root)


def mode() -> str:
    return "interpreter (CPU)" if INTERPRET else "compiled (CUDA)"


def kernel_device_ok(t: torch.Tensor) -> bool:
    """Kernels take CUDA tensors when compiled, CPU tensors when interpreted."""
    return t.device.type == "cpu" if INTERPRET else t.device.type == "cuda"


def kernel_devices_ok(*tensors: torch.Tensor | None) -> bool:
    """check_kernel_device's condition without building device objects (t.device.type costs ~1 us a
    tensor): every tensor given is of the mode's device type, with one device index. Eager tensors only
    (a tracer need not model is_cpu/get_device); False leaves the error message to check_kernel_device."""
    index = None
    for t in tensors:
        if t is not None:
            if not (t.is_cpu if INTERPRET else t.is_cuda):
                return False
            if index is None:
                index = t.get_device()
            elif t.get_device() != index:
                return False
    return True


def check_kernel_device(name: str, *tensors: torch.Tensor | None) -> None:
    """Reject tensors the current mode cannot run, and tensors on different devices, before launch."""
    present = [t for t in tensors if t is not None]
    if not present:
        return
    device = present[0].device
    if device.type != ("cpu" if INTERPRET else "cuda"):
        want = "CPU tensors (TRITON_INTERPRET=1 is set)" if INTERPRET else "CUDA tensors"
        hint = "" if INTERPRET else "; set TRITON_INTERPRET=1 before importing trifuse to run on the CPU"
        raise ValueError(f"trifuse.{name}: expected {want}, got a tensor on {device}{hint}")
    for t in present[1:]:
        if t.device != device:
            raise ValueError(f"trifuse.{name}: all tensors must be on one device, got {device} and {t.device}")
