"""Timing: median, L2-cold, warmed up on a GPU; a plain wall clock in the interpreter.

Two GPU modes. The default is triton's do_bench: each repetition flushes L2 (a 256 MB memset), then
times fn between CUDA events. Host work in fn longer than the memset shows up in the time, as it
does for an eager caller whose GPU waits on Python. `hide_host=True` also queues a GPU sleep before
each repetition, long enough for fn's host work (Python, the autograd engine) to be enqueued in
the meantime: the time is then the device's alone, as in a GPU-bound training step.
"""
from __future__ import annotations

import functools
import statistics
import time

from ..runtime import INTERPRET
from .suite import Fn

# GPU sleep queued before each repetition in hide_host mode: longer than any provider's host time
# per call (the slowest measured, a Python autograd backward, is ~0.3 ms on the lent H200's host).
HOST_GAP_MS = 1.0
MAX_REPS = 300


def time_ms(fn: Fn, *, warmup_ms: float = 25, rep_ms: float = 100, hide_host: bool = False) -> float:
    if INTERPRET:
        # Interpreter timings are CPU numbers, only good for spotting a pathological case.
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)
    if hide_host:
        return _time_host_hidden(fn, warmup_ms, rep_ms)
    from triton.testing import do_bench

    # do_bench flushes L2 between repetitions; its default return mode is the mean, so ask for the median.
    return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


@functools.cache
def _sleep_cycles_per_ms() -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)  # warm
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / start.elapsed_time(end)


def _time_host_hidden(fn: Fn, warmup_ms: float, rep_ms: float) -> float:
    import torch

    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    cycles = int(_sleep_cycles_per_ms() * HOST_GAP_MS)
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush.zero_()
        fn()
    end.record()
    end.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    warmup = max(1, min(MAX_REPS, int(warmup_ms / estimate)))
    reps = max(5, min(MAX_REPS, int(rep_ms / estimate)))
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        flush.zero_()
        torch.cuda._sleep(cycles)
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
