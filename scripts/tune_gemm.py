"""Tune the GEMM configs on this GPU and write the committed table src/trifuse/ops/gemm_tuned.json.

For each (shape, dtype) it times a focused set of configs (portable and, on sm_90, TMA) with the
bias+SiLU epilogue, checks each result against cuBLAS (a config that compiles wrong is never picked),
and keeps the fastest per (GPU family, shape bucket, dtype) key. Entries of other GPU families already in
the table are kept. Stops adding shapes once --budget-s is spent.

    python scripts/tune_gemm.py                      # bf16, the benchmark's shapes, ~3 min on an H100
    python scripts/tune_gemm.py --dtypes bf16,fp16 --shapes 4096x4096x4096 --dry-run
    python scripts/tune_gemm.py --wide --shapes 1024x1024x1024   # also the autotuner's whole space

Times are device time (bench.timing.time_ms with the host hidden, L2 flushed), as `trifuse bench --hide-host`
reports them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trifuse.bench.timing import time_ms
from trifuse.library.eager import direct_launch
from trifuse.ops import gemm_configs as gc
from trifuse.ops.gemm import device_info, gemm_into, tma_layout
from trifuse.ops.gemm_configs import GemmConfig
from trifuse.reference.dropout import keep_mask

# M x K x N, largest first: they matter most and show the clearest differences.
SHAPES = [(8192, 8192, 8192), (8192, 4096, 14336), (8192, 14336, 4096), (16384, 4096, 4096),
          (4096, 4096, 4096), (2048, 2048, 2048), (1024, 1024, 1024), (512, 512, 512), (128, 256, 256),
          (64, 256, 128)]
DROPOUT_SEED = 1234  # --dropout's mask, also applied to the reference
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def space(M: int, N: int, K: int, elem: int, tma: bool, wide: bool = False) -> list[GemmConfig]:
    """A focused set of configs; wide: plus the opt-in autotuner's space (gemm_configs.candidates)."""
    out = []
    if tma:
        for bm, bn in ((128, 256), (256, 128), (128, 128), (64, 256)):
            for stages in (3, 4):
                for sub in (False, True):
                    out.append(GemmConfig("tma", bm, bn, 64, 8, 8, stages, epi_subtile=sub))
        out.append(GemmConfig("tma", 128, 256, 64, 8, 8, 3, epi_subtile=True, flatten=True))
        out.append(GemmConfig("tma", 128, 128, 64, 8, 4, 4))
    bk = 64 if elem <= 2 else 32
    for bm, bn, warps in ((16, 64, 4), (32, 64, 4), (64, 64, 4), (64, 128, 4), (128, 128, 8), (128, 256, 8)):
        for stages in (3, 4):
            out.append(GemmConfig("portable", bm, bn, bk, 8, warps, stages))
    if wide:
        out += [c for c in gc.candidates(M, N, K, elem, tma) if c not in out]
    return [c for c in out if c.smem_bytes(elem) <= gc.SMEM_LIMIT_SM90 and not (c.block_m > 2 * max(M, 16))]


def _compile_one(job: tuple[str, dict]) -> str | None:
    """In a worker process: launch one config once on a small problem with the tuning shapes'
    specialization (every size and stride a multiple of 16), so its binary lands in Triton's disk cache."""
    name, cfg_dict = job
    cfg = gc.from_dict(cfg_dict)
    dtype = DTYPES[name]
    try:
        x = torch.randn(256, 256, device="cuda", dtype=dtype)
        w = torch.randn(256, 256, device="cuda", dtype=dtype)
        out = torch.empty(256, 256, device="cuda", dtype=dtype)
        with direct_launch():
            gemm_into(x, w.t(), out, bias=torch.zeros(256, device="cuda", dtype=dtype), activation="silu",
                      config=cfg)
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 -- reported, then skipped again by tune_one
        return f"{cfg}: {type(e).__name__}: {str(e)[:100]}"
    return None


def precompile(dtypes: list[str], shapes, jobs: int, wide: bool) -> None:
    """Compile every candidate config in parallel worker processes first (one compile of the TMA kernel
    takes ~5-10 s of one CPU core; serially they would eat the whole tuning budget)."""
    todo = []
    for name in dtypes:
        elem = DTYPES[name].itemsize
        seen = set()
        for m, k, n in shapes:
            for cfg in space(m, n, k, elem, torch.cuda.get_device_capability()[0] == 9, wide):
                if cfg not in seen:
                    seen.add(cfg)
                    todo.append((name, asdict(cfg)))
    if jobs <= 1 or not todo:
        return
    import multiprocessing as mp

    t = time.time()
    with mp.get_context("spawn").Pool(min(jobs, len(todo))) as pool:
        errors = [e for e in pool.map(_compile_one, todo, chunksize=1) if e]
    print(f"precompiled {len(todo)} configs with {jobs} processes in {time.time() - t:.0f} s"
          + "".join(f"\n  failed: {e}" for e in errors), flush=True)


def tune_one(m: int, k: int, n: int, dtype: torch.dtype, args) -> tuple[str, GemmConfig, float, float] | None:
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(n, k, device="cuda", dtype=dtype) / k ** 0.5
    bias = torch.randn(n, device="cuda", dtype=dtype)
    b = w.t()
    out = torch.empty(m, n, device="cuda", dtype=dtype)
    ref = torch.nn.functional.silu(torch.nn.functional.linear(x, w, bias)).float()
    p = args.dropout
    seed = torch.tensor([DROPOUT_SEED], device="cuda")
    if p > 0:
        ref = ref * keep_mask(DROPOUT_SEED, m, n, p, x.device).float() / (1 - p)
    cublas_ms = time_ms(lambda: x @ b, rep_ms=args.rep, hide_host=True)
    cap, _ = device_info(x)
    tma = cap[0] == 9 and tma_layout(x, b, out)[0]
    best, timed = None, []
    for cfg in space(m, n, k, x.element_size(), tma, args.wide):
        def run(cfg=cfg):
            # direct_launch: a bare wrap_triton launch outside tracing goes through torch's higher-order
            # op (~150 us of host time a call), which swamped every small shape's timing.
            with direct_launch():
                gemm_into(x, b, out, bias=bias, activation="silu", config=cfg, dropout_p=p, seed=seed)
        try:
            out.fill_(float("nan"))
            run()
            err = float((out.float() - ref).abs().max())
            if not err <= 0.05 + 0.02 * float(ref.abs().max()):
                print(f"  {cfg}: wrong result (max err {err:.3g}), skipped", flush=True)
                continue
            ms = time_ms(run, rep_ms=args.rep, hide_host=True)
        except Exception as e:  # noqa: BLE001 -- a config that does not compile or fit is skipped
            print(f"  {cfg}: failed ({type(e).__name__}: {str(e)[:100]})", flush=True)
            continue
        timed.append((ms, cfg))
        if best is None or ms < best[1]:
            best = (cfg, ms)
    if best is None:
        return None
    for ms, cfg in sorted(timed, key=lambda t: t[0])[: args.show]:
        print(f"  {ms * 1e3:8.1f} us  {cfg}", flush=True)
    key = gc.table_key(cap, m, n, k, str(dtype).replace("torch.", ""))
    return key, best[0], best[1], cublas_ms


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="bf16")
    ap.add_argument("--shapes", help="MxKxN,... (default: the benchmark's shapes)")
    ap.add_argument("--rep", type=int, default=25, help="ms of timing per config")
    ap.add_argument("--wide", action="store_true",
                    help="also the autotuner's space (gemm_configs.candidates)")
    ap.add_argument("--budget-s", type=float, default=220.0, help="stop starting new shapes after this")
    ap.add_argument("--out", default=str(gc.TABLE_PATH))
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the table")
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="time the bias+SiLU+dropout epilogue at this p instead (with --dry-run: the table "
                         "is keyed by shape only)")
    ap.add_argument("--show", type=int, default=0, help="print the fastest N configs of each shape")
    ap.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                    help="processes compiling the candidate configs up front (1: compile while tuning)")
    args = ap.parse_args()
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    path = Path(args.out)
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        table = {}
    configs = table.setdefault("configs", {})
    start = time.time()
    precompile(args.dtypes.split(","), shapes, args.jobs, args.wide)
    for name in args.dtypes.split(","):
        for m, k, n in shapes:
            if time.time() - start > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s spent: stopping before {m}x{k}x{n} {name}")
                break
            res = tune_one(m, k, n, DTYPES[name], args)
            if res is None:
                print(f"{m}x{k}x{n} {name}: no config ran")
                continue
            key, cfg, ms, cublas_ms = res
            tflops = 2 * m * n * k / (ms * 1e-3) / 1e12
            print(f"{m}x{k}x{n} {name}: {ms:.4f} ms ({tflops:.0f} TFLOP/s, {cublas_ms / ms:.3f}x cuBLAS bare) "
                  f"{cfg}", flush=True)
            entry = asdict(cfg)
            entry["measured"] = {"shape": f"{m}x{k}x{n}", "ms": round(ms, 5), "cublas_bare_ms": round(cublas_ms, 5),
                                 "gpu": torch.cuda.get_device_name()}
            configs[key] = entry
            if not args.dry_run:  # after every shape: a run cut short still leaves what it measured
                write(table, path)
    if args.dry_run:
        print(json.dumps(table, indent=1, sort_keys=True))
    else:
        write(table, path)
        print(f"wrote {len(configs)} entries to {path} in {time.time() - start:.0f} s")
    return 0


def write(table: dict, path: Path) -> None:
    table["source"] = (f"scripts/tune_gemm.py on {torch.cuda.get_device_name()}, torch {torch.__version__}, "
                       f"{time.strftime('%Y-%m-%d')}; bias+SiLU epilogue, device time (median, L2 flushed, "
                       "host hidden)")
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
