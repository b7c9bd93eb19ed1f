"""trifuse: fused Triton GPU kernels for PyTorch.

The public API loads lazily: `python -m trifuse` must be able to choose Triton's interpreter before any
`@triton.jit` kernel is defined, and `import trifuse` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "softmax": "trifuse.functional.softmax",
    "log_softmax": "trifuse.functional.softmax",
    "attention": "trifuse.functional.attention",
    "layer_norm": "trifuse.functional.norm",
    "rms_norm": "trifuse.functional.norm",
    "add_layer_norm": "trifuse.functional.norm",
    "add_rms_norm": "trifuse.functional.norm",
    "gemm": "trifuse.functional.gemm",
    "linear": "trifuse.functional.gemm",
}
_SUBMODULES = {"nn", "patch"}

__all__ = [*_API, "nn", "__version__"]  # noqa: PLE0604 - _API is a dict of names (strings)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"trifuse.{name}")
    else:
        raise AttributeError(f"module 'trifuse' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
