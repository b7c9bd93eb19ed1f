"""Runs a Suite: every case through every provider, one row per (case, provider)."""
from __future__ import annotations

import datetime
import gc
import platform
import statistics
import sys
from typing import Any

import torch
import triton

from ..analysis import ceilings
from ..runtime import INTERPRET, mode
from .suite import Case, Suite, Unavailable
from .timing import time_ms

TIMING_DEFAULT = "median, L2 flushed (256 MB read), host time beyond the flush included"
TIMING_HIDDEN = "median, L2 flushed (256 MB read), host time hidden behind a GPU sleep (device time only)"
TIMING_CPU = "median of 3 wall-clock runs in Triton's interpreter (CPU; not GPU timings)"


def device() -> torch.device:
    return torch.device("cpu" if INTERPRET else "cuda")


def provenance() -> dict[str, Any]:
    gpu = "none (Triton interpreter on CPU)" if INTERPRET else torch.cuda.get_device_name()
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "mode": mode(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def measure_ceilings(bound: str, hide_host: bool = False) -> dict[str, float]:
    """The run's ceilings, timed as its rows are (with hide_host, idle gaps let a GPU's clocks recover:
    compute-bound rates then run above their back-to-back figures, the ceiling's included)."""
    if INTERPRET:
        return {}

    def timer(fn):
        return time_ms(fn, hide_host=hide_host)

    out = {"copy_bytes_per_s": ceilings.copy_bandwidth(timer)}
    if bound == "compute":
        for dtype in (torch.bfloat16, torch.float16):
            out[f"matmul_{str(dtype).replace('torch.', '')}_flop_per_s"] = ceilings.matmul_peak(timer, dtype)
    return out


def max_abs_error(out: Any, ref: Any) -> float | None:
    """Largest |out - ref| over all tensors; None when the suite has no reference for the case."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    if all(r is None for r in refs):
        return None
    if len(outs) != len(refs):
        raise ValueError(f"provider returned {len(outs)} tensors, reference {len(refs)}")
    err = 0.0
    for o, r in zip(outs, refs):
        if o is None or r is None or o.numel() == 0:
            continue
        diff = (o.double() - r.double()).abs()
        # NaN where the reference has NaN is agreement; anywhere else it is an error.
        both_nan = torch.isnan(o.double()) & torch.isnan(r.double())
        diff = torch.where(both_nan, torch.zeros_like(diff), diff)
        err = max(err, float(torch.nan_to_num(diff, nan=float("inf")).max()))
    return err


def _ceiling_fraction(suite: Suite, case: Case, ms: float, ceil: dict[str, float], work) -> float | None:
    if not ceil or ms <= 0:
        return None
    if suite.bound == "memory":
        return work.bytes / (ms * 1e-3) / ceil["copy_bytes_per_s"]
    key = f"matmul_{case.dtype_name}_flop_per_s"
    return work.flops / (ms * 1e-3) / ceil[key] if key in ceil else None


def same_size_copy_ms(nbytes: int, hide_host: bool) -> float | None:
    """A device copy moving the same bytes as the case (nbytes / 2 read, nbytes / 2 written), timed as the
    providers are: the ceiling a memory-bound op of this size can be held to. Small transfers do not reach
    the 1 GiB copy's rate (ramp-up and drain are a larger share), so the fraction of the large copy alone
    understates how close a small case is to what the memory system gives at that size."""
    if INTERPRET or nbytes < 2:
        return None
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return time_ms(lambda: dst.copy_(src), hide_host=hide_host)


def _peak_memory_mb(fn) -> float | None:
    """Memory one call allocates beyond what was live before it (temporaries and outputs)."""
    if INTERPRET:
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def _measure(suite: Suite, case: Case, inputs: dict) -> dict[str, Any]:
    """The suite's untimed per-case measurements; a failure is recorded in the rows, not fatal to the run."""
    if suite.measured is None:
        return {}
    try:
        return suite.measured(case, inputs)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory at the largest shapes: record, go on
        print(f"warning: {suite.name} {case.label}: measured columns failed: {type(e).__name__}: {e}",
              file=sys.stderr)
        return {"measured_error": f"{type(e).__name__}: {str(e)[:120]}"}


def run_case(suite: Suite, case: Case, ceil: dict[str, float], *, hide_host: bool = False,
             only: frozenset[str] | None = None, rounds: int = 1) -> list[dict[str, Any]]:
    """Every provider's row for one case; `only` keeps those providers (trifuse's always runs).

    Each provider is built, checked against the reference and measured for memory first; then the
    timings run in `rounds` rounds, every provider once a round in turn, and each keeps its fastest
    round: a drift of the GPU's clocks or of a neighbour's load during one provider's turn is then
    not read as a difference between providers (at 10-20 us kernels one timing moved by 10%)."""
    dev = device()
    inputs = suite.inputs(case, dev)
    ref = suite.reference(case, inputs)
    work = suite.work(case)
    naive = suite.naive_bytes(case) if suite.naive_bytes else None
    measured = _measure(suite, case, inputs)
    rows = []
    timed: list[tuple[dict[str, Any], Any]] = []
    builders = suite.providers(case)
    first = next(iter(builders))
    for name, build in builders.items():
        if only is not None and name != first and name not in only:
            continue
        row: dict[str, Any] = {
            "op": suite.name, "case": case.label, "shape": "x".join(map(str, case.shape)),
            "dtype": case.dtype_name, "direction": case.direction, "provider": name,
        }
        rows.append(row)
        try:
            fn = build(inputs)
            out = fn()  # also the warm-up that compiles (Triton JIT, torch.compile)
            row["max_abs_err"] = max_abs_error(out, ref)
            del out
            row["peak_mem_mb"] = _peak_memory_mb(fn)
        except Exception as e:
            if name == first and not isinstance(e, Unavailable):
                raise  # trifuse's own provider failing is a bug to surface, not a row to skip
            row["skipped"] = _skip_reason(e)
            continue
        timed.append((row, fn))
    copy_ms = same_size_copy_ms(work.bytes, hide_host) if suite.bound == "memory" and work.bytes else None
    round_ms: dict[int, list[float]] = {}
    for _ in range(max(1, rounds)):
        for row, fn in timed:
            if "skipped" in row:
                continue
            try:
                ms = time_ms(fn, hide_host=hide_host)
            except Exception as e:
                if row["provider"] == first and not isinstance(e, (Unavailable, torch.OutOfMemoryError)):
                    raise
                row["skipped"] = _skip_reason(e)
                continue
            round_ms.setdefault(id(row), []).append(ms)
    del timed
    for row in rows:
        if "skipped" in row or id(row) not in round_ms:
            continue
        ms = min(round_ms[id(row)])
        row["ms"] = ms
        row["gb_per_s"] = work.bytes / (ms * 1e-3) / 1e9 if work.bytes else None
        row["tflop_per_s"] = work.flops / (ms * 1e-3) / 1e12 if work.flops else None
        row["ceiling_fraction"] = _ceiling_fraction(suite, case, ms, ceil, work)
        if copy_ms is not None:
            row["same_size_copy_fraction"] = copy_ms / ms
        row["model_bytes"] = work.bytes
        row["model_flops"] = work.flops
        if naive is not None:
            row["bytes_saved_vs_naive"] = naive - work.bytes
        if suite.extras:
            row.update(suite.extras(case))
        row.update(measured)
    ours = rows[0].get("ms") if rows else None
    for r in rows:
        if ours and "ms" in r:
            r["trifuse_speedup"] = r["ms"] / ours  # >1: trifuse is faster than this provider
    if rows and "ms" in rows[0]:
        _round_stats(rows[1:], round_ms[id(rows[0])], round_ms)
    del inputs, ref
    gc.collect()
    if not INTERPRET:
        torch.cuda.empty_cache()
    return rows


def _round_stats(peers: list[dict[str, Any]], ours: list[float], round_ms: dict[int, list[float]]) -> None:
    """Per peer timed in every round beside trifuse: the rounds trifuse was faster in and the median of the
    per-round ratios (peer / trifuse). The best-of ratio of two providers at the same ceiling flips with
    1-2% noise; these say whether one is ahead round after round."""
    for r in peers:
        theirs = round_ms.get(id(r), [])
        if "ms" not in r or len(ours) < 2 or len(theirs) != len(ours):
            continue
        ratios = [t / o for t, o in zip(theirs, ours)]
        r["rounds"] = len(ratios)
        r["rounds_trifuse_faster"] = sum(x > 1 for x in ratios)
        r["round_ratio_median"] = statistics.median(ratios)


def _skip_reason(e: Exception) -> str:
    """A skipped row's reason; out of memory also frees the allocator's cache for the next provider."""
    if isinstance(e, Unavailable):
        return str(e) or "unavailable"
    if isinstance(e, torch.OutOfMemoryError):
        gc.collect()
        torch.cuda.empty_cache()
        return "out of memory"
    return f"failed: {type(e).__name__}: {str(e)[:120]}"


def run_suite(suite: Suite, cases: list[Case], *, progress: bool = True, hide_host: bool = False,
              only: frozenset[str] | None = None, rounds: int = 1) -> dict[str, Any]:
    from rich.progress import Progress

    ceil = measure_ceilings(suite.bound, hide_host)
    rows: list[dict[str, Any]] = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"bench {suite.name}", total=len(cases))
        for case in cases:
            bar.update(task, description=f"{suite.name} {case.label} {case.dtype_name} {case.direction}")
            rows.extend(run_case(suite, case, ceil, hide_host=hide_host, only=only, rounds=rounds))
            bar.advance(task)
    prov = provenance()
    prov["timing"] = TIMING_CPU if INTERPRET else (TIMING_HIDDEN if hide_host else TIMING_DEFAULT)
    if rounds > 1 and not INTERPRET:
        prov["timing"] += f"; best of {rounds} rounds, providers alternating"
    return {"provenance": prov, "ceilings": ceil, "rows": rows, "notes": suite.notes}
