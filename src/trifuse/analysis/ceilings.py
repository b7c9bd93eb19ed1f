"""Ceilings measured on the machine at hand: device copy bandwidth and cuBLAS GEMM peak.

Benchmarks measure them again in every run (a few hundred ms) so that fractions compare numbers taken
on the same GPU in the same state; the last values are also cached on disk for `trifuse info`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..runtime import cache_dir


def cache_path() -> Path:
    return cache_dir() / "ceilings.json"


def _store(key: str, value: float) -> None:
    path = cache_path()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        data.setdefault(torch.cuda.get_device_name(), {})[key] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
    except OSError:
        pass  # a read-only home must not break a benchmark


def cached() -> dict:
    path = cache_path()
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}


Timer = Callable[[Callable[[], object]], float]  # fn -> ms; the caller's, so ceiling and rows are timed alike


def copy_bandwidth(timer: Timer, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    rate = 2 * nbytes / (ms * 1e-3)
    _store("copy_bytes_per_s", rate)
    return rate


def matmul_peak(timer: Timer, dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    """cuBLAS GEMM rate in FLOP/s on an n³ product of random data (never zeros: they run faster).

    The timing matters for compute-bound kernels: back to back (do_bench) an H100 ran cuBLAS 8192^3 at
    666-725 TFLOP/s, with an idle GPU sleep before each repetition (bench --hide-host) at ~785, its
    clocks recovering in the gaps; so benchmarks time the ceiling as they time their rows."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = timer(lambda: a @ b)
    rate = 2 * n**3 / (ms * 1e-3)
    _store(f"matmul_{str(dtype).replace('torch.', '')}_flop_per_s", rate)
    return rate
