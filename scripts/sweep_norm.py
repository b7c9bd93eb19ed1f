"""GPU sweep of the norm launch configs (rows per program, threads, backward programs
per SM, paired row sums), timed at the launcher level so host overhead stays out. Prints GB/s per config.
Run: python3 scripts/sweep_norm.py [bwd | wide | small]  (bwd: backward only; wide: all three column sums;
small: the forward where it trailed a peer, beside Liger's kernels when installed)"""
# ruff: noqa: B023, BLE001 - timing lambdas run before the loop moves on; a failing config is reported

import itertools
import sys

import torch

sys.path.insert(0, "src")
import trifuse.ops.norm_bwd_configs as ob
import trifuse.ops.norm_configs as on
from trifuse.bench.timing import time_ms
from trifuse.library.eager import direct_launch
from trifuse.ops.norm import norm_bwd_into, norm_fwd_into


def _knobs(name: str):
    """The launch-rule module holding a constant: the backward's rules or the forward's (and shared tiles)."""
    return ob if hasattr(ob, name) else on



def gbps(fn, nbytes, rep=40):
    # Launchers go through wrap_triton; outside direct_launch that is torch's slow tracing path. Host time
    # hidden (a GPU sleep before each repetition): at 8-32 MB a launch's ~11 us of host work exceeds the
    # kernel's few microseconds and would otherwise be timed.
    with direct_launch():
        return nbytes / (time_ms(fn, warmup_ms=10, rep_ms=rep, hide_host=True) * 1e-3) / 1e9


def main():
    dt = torch.bfloat16
    bwd_only = "bwd" in sys.argv[1:]
    for m, n in [(16384, 4096), (8192, 8192), (32768, 2048), (8192, 512)]:
        x = torch.randn(m, n, device="cuda", dtype=dt)
        w = torch.randn(n, device="cuda", dtype=dt)
        b = torch.randn(n, device="cuda", dtype=dt)
        y = torch.empty_like(x)
        mean = torch.empty(m, device="cuda")
        rstd = torch.empty(m, device="cuda")
        dy = torch.randn_like(x)
        dx = torch.empty_like(x)
        dw, db = torch.empty_like(w), torch.empty_like(b)
        saved_fwd = on.TILE_ELEMS_FWD, on.ELEMS_PER_THREAD, on.ELEMS_PER_THREAD_FWD_LN
        for is_rms in (False, True):
            res = []

            def fwd():
                norm_fwd_into(x, w, None if is_rms else b, None, None, 1e-5, is_rms, y, None,
                                 None if is_rms else mean, rstd)

            for tile, ept in itertools.product((2048, 4096, 8192, 16384), (8, 16, 32)) if not bwd_only else ():
                on.TILE_ELEMS_FWD, on.ELEMS_PER_THREAD, on.ELEMS_PER_THREAD_FWD_LN = tile, ept, ept
                try:
                    res.append((gbps(fwd, 4 * m * n), tile, ept))
                except Exception as e:
                    print("  fail", tile, ept, type(e).__name__)
            res.sort(reverse=True)
            top = ", ".join(f"t{r[1]} e{r[2]}:{r[0]:.0f}" for r in res[:6])
            if not bwd_only:
                print(f"fwd {'rms' if is_rms else 'ln '} {m}x{n}: {top}")
            res = []
            on.TILE_ELEMS_FWD, on.ELEMS_PER_THREAD, on.ELEMS_PER_THREAD_FWD_LN = saved_fwd
            if not bwd_only:
                print(f"    fwd current default {gbps(fwd, 4 * m * n):.0f}", flush=True)
            fwd()

            def bwd():
                norm_bwd_into(dy, None, x, None, w, None if is_rms else mean, rstd, is_rms, dx, dw,
                                 None if is_rms else db)

            default = gbps(bwd, 6 * m * n)  # the module's own heuristics
            knobs = ("TILE_ELEMS_BWD", "TILE_ELEMS_BWD_NARROW", "BWD_PROGRAMS_PER_SM", "BWD_WIDE_N",
                     "BWD_ONE_PER_SM_VECTOR_ELEMS", "BWD_PAIRED_SUMS")
            saved = {k: getattr(_knobs(k), k) for k in knobs}
            ob.BWD_WIDE_N = ob.BWD_ONE_PER_SM_VECTOR_ELEMS = 1 << 30  # BWD_PROGRAMS_PER_SM at every width
            for paired, tile, per_sm in itertools.product((False,) if is_rms else (False, True),
                                                          (2048, 4096, 8192, 16384), (1, 2, 4)):
                ob.BWD_PAIRED_SUMS, ob.BWD_PROGRAMS_PER_SM = paired, per_sm
                ob.TILE_ELEMS_BWD = ob.TILE_ELEMS_BWD_NARROW = tile
                try:
                    res.append((gbps(bwd, 6 * m * n), tile, per_sm, paired))
                except Exception as e:
                    print("  fail", tile, per_sm, paired, type(e).__name__)
            for k, v in saved.items():
                setattr(_knobs(k), k, v)
            res.sort(reverse=True)
            top = ", ".join(f"t{r[1]} p{r[2]}{' paired' if r[3] else ''}:{r[0]:.0f}" for r in res[:6])
            print(f"bwd {'rms' if is_rms else 'ln '} {m}x{n}: {top} | current default {default:.0f}", flush=True)


def wide():
    """Backward with every column sum (weight, bias, input bias) at wide rows: registers run out, so
    compare the rows kernel's variants with the looped kernel."""
    dt = torch.bfloat16
    for m, n in [(512, 8192), (8192, 8192), (4096, 16384), (16384, 4096)]:
        x, dy = torch.randn(m, n, device="cuda", dtype=dt), torch.randn(m, n, device="cuda", dtype=dt)
        w, b, ib = (torch.randn(n, device="cuda", dtype=dt) for _ in range(3))
        mean, rstd = x.float().mean(-1), x.float().var(-1).add(1e-5).rsqrt()
        dx = torch.empty_like(x)
        dw, db, dib = (torch.empty_like(w) for _ in range(3))
        res = []
        saved = {k: getattr(_knobs(k), k) for k in ("BWD_PREFETCH", "BWD_KEEP_VECTOR_ELEMS", "ELEMS_PER_THREAD",
                                             "BWD_PROGRAMS_PER_SM", "BWD_PREFETCH_MAX_N", "BWD_WIDE_N",
                                             "BWD_ONE_PER_SM_VECTOR_ELEMS")}
        for pre, reload, ept, per_sm, max_n in itertools.product(
                (True, False), (0, 1 << 30), (8, 16), (1, 2), (16384, 4096)):
            if max_n < n and (pre, reload, ept, per_sm) != (True, 0, 16, 2):
                continue  # the looped kernel ignores these knobs: time it once
            ob.BWD_PREFETCH, ob.BWD_KEEP_VECTOR_ELEMS, on.ELEMS_PER_THREAD, ob.BWD_PROGRAMS_PER_SM = pre, reload, ept, per_sm
            ob.BWD_PREFETCH_MAX_N = ob.BWD_WIDE_N = ob.BWD_ONE_PER_SM_VECTOR_ELEMS = 1 << 30
            fn = lambda: norm_bwd_into(dy, None, x, ib, w, mean, rstd, False, dx, dw, db, dib,
                                          max_fused_n=max_n)
            try:
                res.append((gbps(fn, 6 * m * n), "looped" if max_n < n else
                            f"{'pre' if pre else 'nopre'} {'reload' if reload == 0 else 'keep'} e{ept} p{per_sm}"))
            except Exception as e:
                print("  fail", pre, reload, ept, per_sm, max_n, type(e).__name__)
        res.sort(reverse=True)
        for k, v in saved.items():
            setattr(_knobs(k), k, v)
        default = gbps(lambda: norm_bwd_into(dy, None, x, ib, w, mean, rstd, False, dx, dw, db, dib), 6 * m * n)
        print(f"bwd ln+ib+b {m}x{n}: " + ", ".join(f"{r[1]}:{r[0]:.0f}" for r in res[:8])
              + f" | current default {default:.0f}", flush=True)


def _liger_fwd(kind, x, w, b, r):
    """Liger's forward for kind (ln / rms / add_rms), or None when Liger is not installed."""
    try:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except ImportError:
        return None
    return {"ln": lambda: LigerLayerNormFunction.apply(x, w, b, 1e-5),
            "rms": lambda: LigerRMSNormFunction.apply(x, w, 1e-6),
            "add_rms": lambda: LigerFusedAddRMSNormFunction.apply(x, r, w, 1e-6)}[kind]


def small():
    """The forward where it trailed a peer or the bandwidth target: rows per program x values per thread,
    medians over 100 ms (8-128 MB in a few microseconds)."""
    default_config = on.fwd_config
    for m, n, dt in [(512, 8192, torch.float32), (8192, 512, torch.float16), (8192, 512, torch.bfloat16),
                     (4096, 4096, torch.bfloat16), (16384, 4096, torch.bfloat16), (8192, 8192, torch.bfloat16),
                     (32768, 2048, torch.bfloat16)]:
        x, r = torch.randn(m, n, device="cuda", dtype=dt), torch.randn(m, n, device="cuda", dtype=dt)
        w, b = torch.randn(n, device="cuda", dtype=dt), torch.randn(n, device="cuda", dtype=dt)
        y, h = torch.empty_like(x), torch.empty_like(x)
        mean, rstd = torch.empty(m, device="cuda"), torch.empty(m, device="cuda")
        for kind in ("ln", "rms", "add_rms"):
            rms, res_ = kind != "ln", kind == "add_rms"
            nbytes = (4 if res_ else 2) * m * n * x.element_size()

            def fwd():
                norm_fwd_into(x, w, None if rms else b, None, r if res_ else None, 1e-5, rms, y,
                                 h if res_ else None, None if rms else mean, rstd)

            res = []
            for tile, ept in itertools.product((2048, 4096, 8192, 16384), (8, 16, 32)):
                on.fwd_config = lambda m_, n_, rms_, res__: on.rows_config(n_, tile, ept)
                cfg = on.fwd_config(m, n, rms, res_)
                label = f"t{tile} e{ept} ({cfg.block_m}x{cfg.block_n} w{cfg.num_warps})"
                try:
                    res.append((gbps(fwd, nbytes, 100), label))
                except Exception as e:
                    print("  fail", label, type(e).__name__)
            on.fwd_config = default_config
            res.sort(reverse=True)
            cfg = on.fwd_config(m, n, rms, res_)
            liger = _liger_fwd(kind, x, w, b, r)
            peer = f" | liger {gbps(liger, nbytes, 100):.0f}" if liger else ""
            print(f"fwd {kind} {m}x{n} {str(dt)[6:]}: " + ", ".join(f"{c}:{g:.0f}" for g, c in res[:5])
                  + f" | default ({cfg.block_m}x{cfg.block_n} w{cfg.num_warps}) {gbps(fwd, nbytes, 100):.0f}"
                  f"{peer}",
                  flush=True)


if __name__ == "__main__":
    modes = {"wide": wide, "small": small}
    next((f for k, f in modes.items() if k in sys.argv[1:]), main)()
