"""Registry of benchmark suites by op name; each module exposes SUITE (a bench.suite.Suite)."""
from __future__ import annotations

import importlib

from .suite import Suite

SUITE_MODULES = {
    "softmax": "trifuse.bench.softmax",
    "norm": "trifuse.bench.norm",
    "gemm": "trifuse.bench.gemm",
    "attention": "trifuse.bench.attention",
}


def available() -> list[str]:
    return [name for name in SUITE_MODULES if importlib.util.find_spec(SUITE_MODULES[name]) is not None]


def load(name: str) -> Suite:
    if name not in SUITE_MODULES:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(SUITE_MODULES)}")
    if name not in available():
        raise ValueError(f"benchmark {name!r} is not implemented yet; available: {available()}")
    return importlib.import_module(SUITE_MODULES[name]).SUITE
