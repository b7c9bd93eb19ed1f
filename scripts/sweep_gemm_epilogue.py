"""GPU sweep of the TMA GEMM's epilogue slice width with dropout (ops.gemm.EPI_NARROW_N), bf16, at the
launcher level: ms of bias+SiLU with and without dropout, and the dropout's overhead. `dact`: the
backward's elementwise pass (dpre and the dbias partials, ops.gemm.dact_into) per tile and warps, in
TB/s of its byte model (reads dy and pre, writes dpre). `split`: the TMA kernel's epilogue slice count
(ops.gemm.epi_split) per activation, without dropout, host time hidden, best of three alternating rounds.
`ws`: the warp-specialized Gluon kernel against the table's config per shape and activation.
`ws-dropout`: bias + activation + dropout through either kernel against the default no-dropout path.
Run: [WIDTHS=32] python3 scripts/sweep_gemm_epilogue.py [dact|split|ws|ws-dropout]"""
# ruff: noqa: B023 - timing lambdas run before the loop moves on; a failing config is reported

import itertools
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, "src")
import trifuse.ops.gemm as og
import trifuse.ops.gemm_gluon as ogl
from trifuse.bench.timing import time_ms
from trifuse.library.eager import direct_launch


def ms(fn):
    with direct_launch():
        return do_bench(fn, warmup=10, rep=50, return_mode="median")


def problem(m, k, n):
    """x (m, k), w (n, k) as nn.Linear stores it, bias (n,) and out (m, n), bf16."""
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    return x, w, bias, torch.empty(m, n, device="cuda", dtype=torch.bfloat16)


# slice widths main() times (WIDTHS=32 for the default alone)
WIDTHS = [int(w) for w in os.environ.get("WIDTHS", "16,32,64,128").split(",")]


def main():
    for m, k, n in [(4096, 4096, 4096), (8192, 4096, 14336), (16384, 4096, 4096), (8192, 14336, 4096)]:
        x, w, bias, out = problem(m, k, n)
        seed = torch.tensor([7], device="cuda")
        base = ms(lambda: og.gemm_into(x, w.t(), out, bias=bias, activation="silu"))
        row = []
        saved = og.EPI_NARROW_N
        for width in WIDTHS:
            og.EPI_NARROW_N = width
            t = ms(lambda: og.gemm_into(x, w.t(), out, bias=bias, seed=seed, activation="silu", dropout_p=0.1))
            row.append(f"w{width}: {t:.4f} (+{(t / base - 1) * 100:.1f}%)")
        og.EPI_NARROW_N = saved
        print(f"{m}x{k}x{n} silu {base:.4f} ms | dropout " + ", ".join(row), flush=True)


def dact():
    for m, n in [(8192, 14336), (16384, 4096)]:
        dy, pre = (torch.randn(m, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        dpre = torch.empty_like(dy)
        dbias = torch.empty(n, device="cuda", dtype=torch.bfloat16)
        seed = torch.tensor([7], device="cuda")
        for act, p in (("silu", 0.0), ("silu", 0.1), ("gelu", 0.0)):
            res = []
            for tile in itertools.product((32, 64, 128), (64, 128), (4, 8)):
                t = ms(lambda: og.dact_into(dy, pre, dpre, dbias, seed, act, p, tile))
                res.append((3 * m * n * 2 / t / 1e9, "{}x{} w{}".format(*tile)))
            res.sort(reverse=True)
            default = 3 * m * n * 2 / ms(lambda: og.dact_into(dy, pre, dpre, dbias, seed, act, p)) / 1e9
            print(f"dact {act} p={p} +dbias {m}x{n} TB/s: " + ", ".join(f"{c}:{g:.2f}" for g, c in res[:5])
                  + f" | default {og.dact_tile(act, p > 0)} {default:.2f}", flush=True)


def split():
    saved = og.epi_split
    for m, k, n in [(8192, 4096, 14336), (16384, 4096, 4096), (8192, 14336, 4096), (4096, 4096, 4096),
                    (8192, 8192, 8192)]:
        x, w, bias, out = problem(m, k, n)
        with direct_launch():
            cublas = time_ms(lambda: torch.mm(x, w.t(), out=out), hide_host=True)
        print(f"{m}x{k}x{n} cuBLAS bare {cublas:.4f} ms", flush=True)
        for act in ("none", "silu", "gelu", "gelu_tanh"):
            b = None if act == "none" else bias
            times = {}
            for _ in range(3):  # alternating rounds: clock drift hits every variant alike
                for slices in (None, 1, 2, 4, 8):
                    og.epi_split = saved if slices is None else (lambda c, narrow, activation, s=slices: s)
                    with direct_launch():
                        t = time_ms(lambda: og.gemm_into(x, w.t(), out, bias=b, activation=act),
                                    hide_host=True)
                    times.setdefault(slices, []).append(t)
            og.epi_split = saved
            cells = (f"{'default' if s is None else s}: {min(t):.4f} ({cublas / min(t):.3f}x)"
                     for s, t in times.items())
            print(f"  {act}: " + " | ".join(cells), flush=True)
    og.epi_split = saved


def ws():
    """The warp-specialized Gluon kernel (config=WS_CONFIG) against the table's config (an explicit config
    is launched as given, so that one never switches to ws), fraction of cuBLAS bare's speed, device time,
    best of three alternating rounds: the data behind ops.gemm_gluon.ws_applies."""
    for m, k, n in [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192),
                    (8192, 4096, 14336), (8192, 14336, 4096), (16384, 4096, 4096), (4096, 4096, 2048)]:
        x, w, bias, out = problem(m, k, n)
        table = og.choose_config(x, w.t(), out)
        best = {}
        for _ in range(3):
            best["cublas"] = min(best.get("cublas", 9e9), time_ms(lambda: torch.mm(x, w.t(), out=out), hide_host=True))
            for act in ("none", "silu", "gelu", "gelu_tanh"):
                b = None if act == "none" else bias
                for name, cfg in (("table", table), ("ws", ogl.WS_CONFIG)):
                    with direct_launch():
                        t = time_ms(lambda: og.gemm_into(x, w.t(), out, bias=b, activation=act, config=cfg),
                                    hide_host=True)
                    best[name, act] = min(best.get((name, act), 9e9), t)
        cub = best["cublas"]
        print(f"{m}x{k}x{n} cuBLAS bare {cub:.4f} ms, table {table.kernel} {table.block_m}x{table.block_n}", flush=True)
        for act in ("none", "silu", "gelu", "gelu_tanh"):
            picked = ogl.ws_applies(table, m, n, k, act, False, False)
            print(f"  {act}: table {cub / best['table', act]:.3f}x | ws {cub / best['ws', act]:.3f}x"
                  f" | ws_applies {picked}", flush=True)


def ws_dropout():
    """Dropout's overhead over the default path without it (ws where ws_applies, else the table's config),
    through the table's config and through the Gluon kernel, device time, best of three alternating rounds:
    the data behind ops.gemm_gluon.WS_DROPOUT_ACTIVATIONS."""
    seed = torch.tensor([7], device="cuda")
    for m, k, n in [(2048, 2048, 2048), (4096, 4096, 2048), (4096, 4096, 4096), (16384, 4096, 4096),
                    (8192, 8192, 8192), (8192, 4096, 14336), (8192, 14336, 4096)]:
        x, w, bias, out = problem(m, k, n)
        table = og.choose_config(x, w.t(), out)
        best = {}
        for _ in range(3):
            for act in ("none", "silu", "gelu"):
                variants = {"default": dict(), "table+drop": dict(config=table, dropout_p=0.1, seed=seed),
                            "ws+drop": dict(config=ogl.WS_CONFIG, dropout_p=0.1, seed=seed)}
                for name, kw in variants.items():
                    with direct_launch():
                        t = time_ms(lambda: og.gemm_into(x, w.t(), out, bias=bias, activation=act, **kw),
                                    hide_host=True)
                    best[name, act] = min(best.get((name, act), 9e9), t)
        print(f"{m}x{k}x{n} table {table.kernel} {table.block_m}x{table.block_n}", flush=True)
        for act in ("none", "silu", "gelu"):
            base = best["default", act]
            print(f"  bias+{act}: {base:.4f} ms | dropout: table {best['table+drop', act]:.4f} "
                  f"(+{(best['table+drop', act] / base - 1) * 100:.1f}%) | ws {best['ws+drop', act]:.4f} "
                  f"(+{(best['ws+drop', act] / base - 1) * 100:.1f}%) | ws_applies "
                  f"{ogl.ws_applies(table, m, n, k, act, False, False, dropout=True)}", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    {"dact": dact, "split": split, "ws": ws, "ws-dropout": ws_dropout}.get(mode, main)()
