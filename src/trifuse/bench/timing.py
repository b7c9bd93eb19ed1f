"""Timing: median, L2-cold, warmed up on a GPU; a plain wall clock in the interpreter.

Each repetition first evicts L2 by reading a 256 MB buffer (`flush_l2`), then times fn between CUDA
events. Two GPU modes. By default nothing else comes between: host work in fn longer than the flush
shows up in the time, as it does for an eager caller whose GPU waits on Python (triton's do_bench
measures this way). `hide_host=True` also queues a GPU sleep after the flush, long enough for fn's
host work (Python, the autograd engine) to be enqueued in the meantime: the time is then the device's
alone, as in a GPU-bound training step.
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
FLUSH_BYTES = 256 * 1024 * 1024  # five times an H100's 50 MB L2


def time_ms(fn: Fn, *, warmup_ms: float = 25, rep_ms: float = 100, hide_host: bool = False) -> float:
    if INTERPRET:
        # Interpreter timings are CPU numbers, only good for spotting a pathological case.
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)
    gap_cycles = int(_sleep_cycles_per_ms() * HOST_GAP_MS) if hide_host else 0
    return _time_flushed(fn, warmup_ms, rep_ms, gap_cycles)


@functools.cache
def _flush_buffer():
    import torch

    return torch.zeros(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")


def flush_l2() -> None:
    """Evict L2 by reading FLUSH_BYTES. A read, not do_bench's memset: a memset leaves L2 full of dirty
    lines, and the timed op then pays for writing them back (H100, scripts/flush_probe.py: +6.6 us at
    any size, a 64 MB copy 27.7 vs 21.1 us, a 512 MB copy 182 vs 175 us)."""
    import torch

    _flush_buffer().sum(dtype=torch.int64)


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


def _time_flushed(fn: Fn, warmup_ms: float, rep_ms: float, gap_cycles: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush_l2()
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
        flush_l2()
        if gap_cycles:
            torch.cuda._sleep(gap_cycles)
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
