"""Reports: a rich table on the terminal, CSV and JSON files with provenance, optional plots."""
from __future__ import annotations

import csv
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One line per case: trifuse's figures, then each other provider's ms and trifuse's speedup."""
    rows = result["rows"]
    by_case: OrderedDict[tuple, list[dict]] = OrderedDict()
    for r in rows:
        by_case.setdefault((r["op"], r["case"], r["dtype"], r["direction"]), []).append(r)
    providers = list(OrderedDict.fromkeys(r["provider"] for r in rows))
    ours, others = providers[0], providers[1:]
    compute = any(r.get("tflop_per_s") for r in rows) and not any(r.get("gb_per_s") for r in rows)
    rate_col = "TFLOP/s" if compute else "GB/s"
    saved = any(r.get("bytes_saved_vs_naive") is not None for r in rows)
    same_size = any(r.get("same_size_copy_fraction") is not None for r in rows)
    header = ["case", "dtype", "dir", f"{ours} ms", rate_col, "% ceiling"]
    header += ["% same-size copy"] if same_size else []
    header += ["max err", "model GFLOP" if compute else "model MiB"]
    header += ["MiB saved vs naive"] if saved else []
    graph = any(r.get("graph_mb") is not None for r in rows)
    header += ["graph MiB (eager)"] if graph else []
    header += [f"{p} ms (x)" for p in others]
    table = []
    for (_, case, dtype, direction), group in by_case.items():
        named = {r["provider"]: r for r in group}
        me = named.get(ours, {})
        rate = me.get("tflop_per_s") if compute else me.get("gb_per_s")
        frac = me.get("ceiling_fraction")
        model = me.get("model_flops") / 1e9 if compute and me.get("model_flops") else None
        if not compute and me.get("model_bytes"):
            model = me["model_bytes"] / 2**20
        line = [case, dtype, direction, _fmt(me.get("ms"), ".4f"), _fmt(rate, ".0f"),
                _fmt(None if frac is None else 100 * frac, ".1f")]
        if same_size:
            copy_frac = me.get("same_size_copy_fraction")
            line.append(_fmt(None if copy_frac is None else 100 * copy_frac, ".1f"))
        line += [_fmt(me.get("max_abs_err"), ".1e"), _fmt(model, ".3g")]
        if saved:
            b = me.get("bytes_saved_vs_naive")
            line.append(_fmt(None if b is None else b / 2**20, ".3g"))
        if graph:
            g, ge = me.get("graph_mb"), me.get("graph_mb_eager")
            line.append("-" if g is None else f"{g:.3g} ({_fmt(ge, '.3g')})")
        for p in others:
            r = named.get(p)
            if r is None or "ms" not in r:
                line.append("n/a" if r is None else "skip")
            else:
                sp = r.get("trifuse_speedup")
                line.append(f"{r['ms']:.4f} ({sp:.2f}x)" if sp else f"{r['ms']:.4f}")
        table.append(line)
    return header, table


def compact_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary cut to what a README table needs: trifuse's time, rate and ceiling fraction, and
    trifuse's speedup over each other provider ("skip" where that provider did not run)."""
    header, table = summary_rows(result)
    keep = range(header.index("max err"))  # case ... % ceiling (and % same-size copy when measured)
    others = [i for i, h in enumerate(header) if h.endswith(" ms (x)")]
    out_header = [header[i] for i in keep] + ["vs " + header[i][: -len(" ms (x)")] for i in others]
    out = []
    for line in table:
        # A peer's time without a speedup (trifuse's own row skipped) is no speedup: "-".
        speedups = [c[c.index("(") + 1: c.index(")")] if "(" in c else c if c in ("skip", "n/a") else "-"
                    for c in (line[i] for i in others)]
        out.append([line[i] for i in keep] + speedups)
    return out_header, out


def slower_than_peers(result: dict[str, Any]) -> tuple[list[str], int]:
    """Every (case, provider) where trifuse was slower, worst first, and the number of comparisons made;
    none for interpreter runs, whose CPU timings say nothing about speed (runtime.mode)."""
    if result["provenance"].get("mode", "").startswith("interpreter"):
        return [], 0
    rows = [r for r in result["rows"] if r.get("trifuse_speedup") and r["provider"] != "trifuse"]
    ours = {(r["case"], r["dtype"], r["direction"]): r["ms"] for r in result["rows"]
            if r["provider"] == "trifuse" and "ms" in r}
    slower = sorted((r for r in rows if r["trifuse_speedup"] < 1), key=lambda r: r["trifuse_speedup"])
    lines = [f"{r['case']} {r['dtype']} {r['direction']}: {r['provider']} {r['trifuse_speedup']:.3f}x "
             f"({ours.get((r['case'], r['dtype'], r['direction']), float('nan')):.4f} vs {r['ms']:.4f} ms)"
             + (f", faster in {r['rounds_trifuse_faster']}/{r['rounds']} rounds, per-round median "
                f"{r['round_ratio_median']:.3f}x" if "rounds" in r else "")
             for r in slower]
    return lines, len(rows)


def print_result(result: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 160))
    prov = result["provenance"]
    header, rows = summary_rows(result)
    table = Table(title=f"{title} | {prov['gpu']} | torch {prov['torch']} triton {prov['triton']}")
    for h in header:
        table.add_column(h, justify="left" if h in ("case", "dtype", "dir") else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    ceil = result.get("ceilings") or {}
    if "copy_bytes_per_s" in ceil:
        console.print(f"copy bandwidth measured in this run: {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s")
    for k, v in ceil.items():
        if k.startswith("matmul"):
            console.print(f"cuBLAS {k.split('_')[1]} 8192^3 in this run: {v / 1e12:.0f} TFLOP/s")
    if prov.get("timing"):
        console.print(f"timing: {prov['timing']}")
    console.print("(x) = that provider's time / trifuse's time: above 1 means trifuse is faster.")
    if "% same-size copy" in header:
        console.print("% same-size copy = a device copy moving the case's bytes, timed the same way, over "
                      "trifuse's time.")
    for note in result.get("notes", []):
        console.print(f"note: {note}")
    slower, compared = slower_than_peers(result)
    if compared:
        console.print(f"slower than a provider in {len(slower)} of {compared} comparisons"
                      + (":" if slower else "."))
        for line in slower:
            console.print(f"  {line}")


def markdown(result: dict[str, Any], *, compact: bool = False) -> str:
    """The summary table (or its compact cut) as GitHub markdown, with the run's provenance and ceilings."""
    prov = result["provenance"]
    header, rows = compact_rows(result) if compact else summary_rows(result)
    lines = [f"{prov['gpu']}, torch {prov['torch']}, triton {prov['triton']}, {prov['date']}"]
    ceil = result.get("ceilings") or {}
    if "copy_bytes_per_s" in ceil:
        lines[0] += f"; copy bandwidth {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s"
    for k, v in ceil.items():
        if k.startswith("matmul"):
            lines[0] += f"; cuBLAS {k.split('_')[1]} 8192^3 {v / 1e12:.0f} TFLOP/s"
    if prov.get("timing"):
        lines[0] += f"; timing: {prov['timing']}"
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    slower, compared = slower_than_peers(result)
    if slower:
        lines += ["", f"Slower than a provider in {len(slower)} of {compared} comparisons:", ""]
        lines += [f"- {line}" for line in slower]
    return "\n".join(lines) + "\n"


def write_csv(result: dict[str, Any], path: str | Path) -> None:
    rows = result["rows"]
    prov = result["provenance"]
    keys = list(OrderedDict.fromkeys(k for r in rows for k in r))
    keys += [f"ceiling_{k}" for k in result.get("ceilings", {})] + list(prov)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            extra = {f"ceiling_{k}": v for k, v in result.get("ceilings", {}).items()}
            w.writerow({**r, **extra, **prov})


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str))


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Bar chart of each provider's rate per case (needs the optional `plot` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("plots need matplotlib: pip install 'trifuse[plot]'") from e
    rows = [r for r in result["rows"] if "ms" in r]
    cases = list(OrderedDict.fromkeys(f"{r['case']} {r['dtype']} {r['direction']}" for r in rows))
    providers = list(OrderedDict.fromkeys(r["provider"] for r in rows))
    key = "tflop_per_s" if rows and rows[0].get("tflop_per_s") and not rows[0].get("gb_per_s") else "gb_per_s"
    fig, ax = plt.subplots(figsize=(max(8, len(cases) * 0.9), 4.5))
    width = 0.8 / max(len(providers), 1)
    for i, p in enumerate(providers):
        vals = []
        for c in cases:
            match = [r for r in rows if r["provider"] == p and f"{r['case']} {r['dtype']} {r['direction']}" == c]
            vals.append(match[0].get(key) or 0 if match else 0)
        ax.bar([j + i * width for j in range(len(cases))], vals, width, label=p)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))], cases, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("TFLOP/s" if key == "tflop_per_s" else "GB/s")
    ax.set_title(f"{result['rows'][0]['op']} on {result['provenance']['gpu']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
