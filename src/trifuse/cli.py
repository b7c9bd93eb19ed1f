"""Command line: `python -m trifuse info | demo | bench OP`.

Without a GPU the CLI switches Triton to its CPU interpreter before any kernel module is imported, and
says so: timings printed there are CPU timings of the interpreter, not GPU timings.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def _select_mode() -> None:
    if "TRITON_INTERPRET" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


def _banner() -> None:
    from .runtime import INTERPRET

    if INTERPRET:
        print("trifuse: no GPU in use -- CPU mode, kernels run in Triton's interpreter (TRITON_INTERPRET=1).")
        print("         Shapes are small and timings are interpreter CPU timings, not GPU timings.")


def cmd_info(args) -> int:
    import platform

    import torch
    import triton

    import trifuse

    from .analysis import ceilings
    from .runtime import mode

    print(f"trifuse {trifuse.__version__}")
    print(f"python  {platform.python_version()}")
    print(f"torch   {torch.__version__}")
    print(f"triton  {triton.__version__}")
    print(f"mode    {mode()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device  {p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
              f"{p.total_memory / 2**30:.0f} GiB)")
    else:
        print("device  none (CPU only)")
    print(f"ceiling cache {ceilings.cache_path()}")
    for gpu, vals in ceilings.cached().items():
        print(f"  {gpu}: " + ", ".join(f"{k}={v:.3g}" for k, v in vals.items()))
    return 0


DIRECTIONS = ("fwd", "bwd", "fwd+bwd")


def _checked_shapes(suite, text: str | None) -> list[tuple[int, ...]] | None:
    """--shapes parsed, each item with the suite's dims (Suite.shape_dims), every dim positive and int32-sized."""
    from .bench.suite import parse_shapes

    shapes = parse_shapes(text)
    dims = suite.shape_dims
    for shape in shapes or ():
        if dims and len(shape) != len(dims):
            raise ValueError(f"--shapes: {suite.name} takes {'x'.join(dims)} items, got {'x'.join(map(str, shape))}")
        if not all(0 < d < 2**31 for d in shape):
            raise ValueError(f"--shapes: every size must be in [1, 2^31), got {'x'.join(map(str, shape))}")
    return shapes


def _checked_directions(text: str | None) -> list[str] | None:
    if not text:
        return None
    directions = text.split(",")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"--direction: expected some of {', '.join(DIRECTIONS)} (comma-separated), got {bad}")
    return directions


def _bench_one(name: str, scale: str, args) -> dict:
    import torch

    from .bench import harness, suites

    suite = suites.load(name)
    dtype = getattr(torch, DTYPES[args.dtype]) if getattr(args, "dtype", None) else None
    directions = _checked_directions(getattr(args, "direction", None))
    cases = suite.cases(scale=scale, shapes=_checked_shapes(suite, getattr(args, "shapes", None)), dtype=dtype,
                        directions=directions)
    only = getattr(args, "providers", None)
    only = frozenset(only.split(",")) if only else None
    if only and cases:
        known = set(suite.providers(cases[0]))
        if only - known:
            raise ValueError(f"--providers: unknown provider(s) {sorted(only - known)} for {name}; "
                             f"expected some of {sorted(known)}")
    from .runtime import INTERPRET

    rounds = getattr(args, "rounds", 1)
    if rounds < 1:
        raise ValueError(f"--rounds: expected a positive integer, got {rounds}")
    rounds = 1 if INTERPRET else rounds  # interpreter timings are CPU numbers, never compared
    return harness.run_suite(suite, cases, progress=sys.stderr.isatty(),
                             hide_host=bool(getattr(args, "hide_host", False)), only=only, rounds=rounds)


def cmd_bench(args) -> int:
    from .bench import report
    from .runtime import INTERPRET

    # What would fail after the run is checked before it (_bench_one checks the op's own arguments): the
    # output paths and matplotlib for --plot.
    for flag, path in (("--csv", args.csv), ("--json", args.json), ("--plot", args.plot)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ValueError(f"{flag}: no directory {os.path.dirname(os.path.abspath(path))!r} to write {path!r} in")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib (pip install 'trifuse[plot]' or matplotlib)")
    _banner()
    scale = "cpu" if INTERPRET else ("quick" if args.quick else "full")
    result = _bench_one(args.op, scale, args)
    report.print_result(result, f"trifuse bench {args.op}")
    if args.csv:
        report.write_csv(result, args.csv)
    if args.json:
        report.write_json(result, args.json)
    if args.plot:
        report.plot(result, args.plot)
    return 0


def cmd_demo(args) -> int:
    from .bench import report, suites
    from .runtime import INTERPRET

    _banner()
    scale = "cpu" if INTERPRET else "quick"
    for name in suites.available():
        result = _bench_one(name, scale, args)
        report.print_result(result, f"trifuse demo: {name}")
    return 0


def cmd_report(args) -> int:
    """Re-render saved benchmark JSON files (from `bench --json`) as tables or markdown."""
    import json

    from .bench import report

    for path in args.files:
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"report: cannot read {path!r} as JSON: {e}") from None
        if not (isinstance(result, dict) and isinstance(result.get("provenance"), dict)
                and isinstance(result.get("rows"), list) and result["rows"]):
            raise ValueError(f"report: {path!r} is not a `trifuse bench --json` result with rows")
        if args.markdown:
            print(report.markdown(result, compact=args.compact))
        else:
            report.print_result(result, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trifuse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, device, mode, ceiling cache")
    sub.add_parser("demo", help="a short benchmark of every op (CPU mode: small shapes in the interpreter)")
    b = sub.add_parser("bench", help="benchmark one op against torch eager, torch.compile and peers")
    b.add_argument("op", help="softmax, norm, gemm or attention")
    b.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on a GPU, fp32 in the interpreter")
    b.add_argument("--shapes", help="comma-separated, e.g. 4096x4096,8192x512: MxN for softmax and norm, MxKxN for "
                                    "gemm, BxHxSxD for attention")
    b.add_argument("--direction", help="fwd, bwd or fwd+bwd (comma-separated)")
    b.add_argument("--quick", action="store_true", help="a few representative shapes")
    b.add_argument("--hide-host", action="store_true",
                   help="queue a GPU sleep before each repetition so host time (Python, autograd) is hidden: "
                        "device time only, as in a GPU-bound step")
    b.add_argument("--rounds", type=int, default=3,
                   help="timing rounds, providers alternating within each; every provider keeps its fastest "
                        "round (default 3; 1 in the interpreter)")
    b.add_argument("--providers", help="comma-separated providers to run beside trifuse (default: all), "
                                      "e.g. eager,cublas_bare")
    b.add_argument("--csv", help="write every row with provenance to this CSV file")
    b.add_argument("--json", help="write the whole result to this JSON file")
    b.add_argument("--plot", help="write a bar chart PNG (needs matplotlib)")
    r = sub.add_parser("report", help="re-render saved `bench --json` results")
    r.add_argument("files", nargs="+")
    r.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    r.add_argument("--compact", action="store_true",
                   help="with --markdown: trifuse's time, rate, %% ceiling and speedup over each provider")
    args = parser.parse_args(argv)
    _select_mode()
    try:
        commands = {"info": cmd_info, "demo": cmd_demo, "bench": cmd_bench, "report": cmd_report}
        return commands[args.cmd](args)
    except ValueError as e:
        parser.error(str(e))
        return 2
