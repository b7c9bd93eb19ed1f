"""Timing: median, L2-cold, warmed up on a GPU; a plain wall clock in the interpreter."""
from __future__ import annotations

import statistics
import time

from ..runtime import INTERPRET
from .suite import Fn


def time_ms(fn: Fn, *, warmup_ms: float = 25, rep_ms: float = 100) -> float:
    if INTERPRET:
        # Interpreter timings are CPU numbers, only good for spotting a pathological case.
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)
    from triton.testing import do_bench

    # do_bench flushes L2 between repetitions; its default return mode is the mean, so ask for the median.
    return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
