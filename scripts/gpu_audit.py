#!/usr/bin/env python3
"""GPU audit of trifuse (H100 / sm_90): wrong results, crashes, NaNs and unclear errors on the kernel
routes the CPU interpreter never runs (16-bit math, the Hopper TMA GEMM, the Gluon warp-specialized GEMM and
attention kernels, wide norms/softmax, torch.compile).

    python3 scripts/gpu_audit.py            # every case, ~4 min budget (from the repository root)
    python3 scripts/gpu_audit.py ws_ attn_ws                  # only cases whose name contains a substring
    python3 scripts/gpu_audit.py ~torch_compile ~attn_bf16_   # all but cases containing a substring
    python3 scripts/gpu_audit.py --list                       # list the cases, run nothing

Env: OUT=<dir> also writes <dir>/gpu_audit.txt (line by line, so a crash or a kill keeps what ran);
AUDIT_BUDGET_S (default 235): cases starting after this many seconds are SKIPped; AUDIT_CASE_TIMEOUT_S
(default 150): a case running longer than this is reported as a HANG and the process exits (a deadlocked GPU
kernel cannot be interrupted otherwise); AUDIT_CPU_SMOKE=1: run tiny shapes on the CPU in Triton's interpreter
(only to check this script's own logic). After an illegal memory access the CUDA context is lost: the rest is
SKIPped; rerun the remaining cases by name (and with CUDA_LAUNCH_BLOCKING=1 to pin the kernel).

Each case compares against an fp64 reference; the budget is max(2 x torch's own error in the same low
precision, floor x max(1, max|ref|)) with the test suite's floors. Lines: STATUS name [seconds] notes. Notes
give err/budget per checked tensor and the kernels that ran (routes); "WARN route" means the case did not take
the route it was written for (it still checks numerics).
"""
import gc
import math
import os
import sys
import threading
import time
import traceback
import zlib

sys.path.insert(0, "src")

SMOKE = os.environ.get("AUDIT_CPU_SMOKE") == "1"
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

T0 = time.time()
BUDGET = float(os.environ.get("AUDIT_BUDGET_S", "1e9" if SMOKE else "235"))
CASE_TIMEOUT = float(os.environ.get("AUDIT_CASE_TIMEOUT_S", "1e9" if SMOKE else "150"))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--") and not a.startswith("~")]
EXCLUDE = [a[1:] for a in sys.argv[1:] if a.startswith("~")]
LIST_ONLY = "--list" in sys.argv

import numpy as np  # noqa: E402,F401  (allowed; not needed beyond torch)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import trifuse  # noqa: E402
from trifuse.reference.gemm import ACTIVATION_FNS  # noqa: E402

DEV = torch.device("cpu" if SMOKE else "cuda")
# The smoke mode runs fp16 where the GPU run uses bf16: Triton's interpreter gives garbage for bf16 dots.
BF16 = torch.float16 if SMOKE else torch.bfloat16
FP16, FP32, FP64 = torch.float16, torch.float32, torch.float64
FLOOR = {FP32: 1e-5, FP16: 2e-3, BF16: 1e-2}
ATT_FLOOR = {FP32: 1e-5, FP16: 2e-3, BF16: 1.6e-2}
SM_FLOOR = {FP32: 1e-6, FP16: 1e-3, BF16: 8e-3}


def Z(n, small):
    """A size: n on the GPU, `small` in the CPU smoke mode."""
    return small if SMOKE else n


# ----------------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------------
_OUT_FILE = None
if os.environ.get("OUT"):
    try:
        os.makedirs(os.environ["OUT"], exist_ok=True)
        _OUT_FILE = open(os.path.join(os.environ["OUT"], "gpu_audit.txt"), "w")  # noqa: SIM115
    except OSError as e:  # pragma: no cover
        print(f"cannot open $OUT/gpu_audit.txt: {e}")


def emit(line: str) -> None:
    print(line, flush=True)
    if _OUT_FILE is not None:
        _OUT_FILE.write(line + "\n")
        _OUT_FILE.flush()


class Failure(AssertionError):
    pass


class Notes(list):
    def add(self, s):
        self.append(s)


# ----------------------------------------------------------------------------------------------------------
# route tracing: wrap the launch helpers the op modules call by global name (in-process only)
# ----------------------------------------------------------------------------------------------------------
TRACE: list = []


def _kname(kernel) -> str:
    name = getattr(kernel, "__name__", None)
    if not name:
        name = getattr(getattr(kernel, "fn", None), "__name__", None)
    return name or type(kernel).__name__


def _install_route_hooks() -> None:
    def wrap_launcher(mod, tag):
        orig = mod.launcher

        def launcher(kernel):
            TRACE.append(f"{tag}:{_kname(kernel)}")
            return orig(kernel)

        mod.launcher = launcher

    def wrap_fn(mod, attr, label):
        orig = getattr(mod, attr)

        def fn(*a, **k):
            TRACE.append(label)
            return orig(*a, **k)

        setattr(mod, attr, fn)

    try:
        import trifuse.ops.attention as oa
        import trifuse.ops.attention_ws as ows
        import trifuse.ops.gemm as og
        import trifuse.ops.norm as on
        import trifuse.ops.softmax as osm

        wrap_launcher(og, "gemm")
        wrap_fn(og, "_launch_ws", "gemm:ws")
        wrap_launcher(oa, "attn")
        wrap_fn(ows, "launch_fwd", "attn:ws_fwd")
        wrap_fn(ows, "launch_dkdv", "attn:ws_dkdv")
        wrap_fn(ows, "launch_dq", "attn:ws_dq")
        wrap_launcher(on, "norm")
        wrap_launcher(osm, "softmax")
    except Exception as e:  # noqa: BLE001 - informational only
        print(f"(route hooks not installed: {type(e).__name__}: {e})")


def routes() -> str:
    seen = []
    for t in TRACE:
        if t not in seen:
            seen.append(t)
    return ",".join(seen)


WARNINGS = []


def expect_route(notes, want, absent=False):
    """want: a tag (or tuple of alternatives) that should (absent=False) / should not appear in TRACE."""
    wants = (want,) if isinstance(want, str) else tuple(want)
    hit = any(w in TRACE for w in wants)
    if SMOKE:
        return
    if hit == absent:
        msg = f"WARN route: {'did not expect' if absent else 'expected'} {'|'.join(wants)}"
        notes.add(msg)
        WARNINGS.append(msg)


# ----------------------------------------------------------------------------------------------------------
# numerics helpers
# ----------------------------------------------------------------------------------------------------------
def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def max_err(a, ref) -> float:
    """max |a - ref| over positions where ref is finite (non-finite positions are checked separately)."""
    if a.numel() == 0:
        return 0.0
    a = a.detach().double()
    ref = ref.detach().double()
    fin = torch.isfinite(ref)
    d = (a - ref).abs()
    d = torch.where(fin, d, torch.zeros_like(d))
    d = torch.nan_to_num(d, nan=float("inf"))
    return float(d.max())


def check_close(notes, what, out, ref, base=None, floor=1e-2, factor=2.0):
    """out vs ref (high precision). budget = max(factor * err(base, ref), floor * max(1, max|ref|)).
    Positions where ref is non-finite must match in kind (NaN / +inf / -inf); out must be finite elsewhere."""
    if tuple(out.shape) != tuple(ref.shape):
        raise Failure(f"{what}: shape {tuple(out.shape)} != ref {tuple(ref.shape)}")
    o = out.detach().double()
    r = ref.detach().double()
    if o.numel() == 0:
        notes.add(f"{what}:empty-ok")
        return
    rf = torch.isfinite(r)
    of = torch.isfinite(o)
    bad_nf = (~of & rf)
    if bad_nf.any():
        idx = torch.nonzero(bad_nf)[:3].tolist()
        raise Failure(f"{what}: {int(bad_nf.sum())} non-finite values where the reference is finite, e.g. at {idx}"
                      f" ({o[tuple(torch.nonzero(bad_nf)[0].tolist())].item()})")
    if (~rf).any():
        same = (torch.isnan(o) == torch.isnan(r)) & (torch.isinf(o) == torch.isinf(r)) & \
               ((o == r) | torch.isnan(r) | rf)
        if not bool(same.all()):
            idx = torch.nonzero(~same)[:3].tolist()
            raise Failure(f"{what}: non-finite pattern differs from the reference at {idx}")
    err = max_err(o, r)
    scale = max(1.0, float(torch.where(rf, r.abs(), torch.zeros_like(r)).max()))
    budget = floor * scale
    berr = None
    if base is not None:
        berr = max_err(base, r)
        budget = max(budget, factor * berr)
    notes.add(f"{what}:{err:.2e}/{budget:.2e}")
    if not err <= budget:
        d = torch.where(rf, (o - r).abs(), torch.zeros_like(r))
        nbad = int((d > budget).sum())
        i = tuple(torch.nonzero(d == d.max())[0].tolist())
        raise Failure(f"{what}: max err {err:.3e} > budget {budget:.3e} (torch err {berr if berr is None else f'{berr:.2e}'},"
                      f" {nbad} elems over; worst at {list(i)}: got {o[i].item():.5g} ref {r[i].item():.5g})")


def check_equal(what, a, b):
    if not torch.equal(a, b):
        n = int((a != b).sum()) if a.shape == b.shape else -1
        raise Failure(f"{what}: not bitwise identical ({n} elements differ)")


def check_finite(what, t):
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise Failure(f"{what}: {int((~torch.isfinite(t)).sum())} non-finite values")


def rnd(*shape, dtype=BF16, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).to(dtype)


def mk(shape, dtype, layout="contig", offset=0, scale=1.0, grad=False):
    """A 2-D (or 1-D for 'contig'/'expand') tensor of logical `shape`, stored per `layout`:
    contig | t (stored transposed) | padN (rows N elements longer, sliced) | expand (stride-0 rows / elements),
    `offset` elements past an allocation's start (breaks 16-byte alignment for odd offsets). grad: the storage
    is a leaf that requires grad; the returned tensor is a view of it (differentiate w.r.t. the view)."""
    shape = tuple(shape)
    if layout == "contig":
        st_shape = shape
    elif layout == "t":
        st_shape = shape[::-1]
    elif layout.startswith("pad"):
        st_shape = (*shape[:-1], shape[-1] + int(layout[3:]))
    elif layout == "expand":
        st_shape = (1,) * len(shape) if len(shape) == 1 else (1, *shape[1:])
    else:
        raise ValueError(layout)
    data = (torch.randn(st_shape, device=DEV) * scale).to(dtype)
    if offset:
        buf = torch.zeros(data.numel() + offset, dtype=dtype, device=DEV)
        buf[offset:].copy_(data.reshape(-1))
        if grad:
            buf.requires_grad_(True)
        st = buf[offset:].view(st_shape)
    else:
        if grad:
            data.requires_grad_(True)
        st = data
    if layout == "t":
        return st.t()
    if layout.startswith("pad"):
        return st[..., :shape[-1]]
    if layout == "expand":
        return st.expand(shape)
    return st


def leaf64(t):
    return t.detach().double().requires_grad_(True)


def grads(outs, inputs, gouts):
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    gouts = gouts if isinstance(gouts, (tuple, list)) else (gouts,)
    return torch.autograd.grad(outs, inputs, gouts, allow_unused=True)


ACT = ACTIVATION_FNS  # trifuse.reference.gemm: one definition of each activation


def gemm_compose(a, b, bias, act, residual=None, keep=None, p=0.0, out_dtype=None):
    """dropout(act(a @ b + bias)) + residual in a's dtype (the baseline) or fp64 (the reference)."""
    pre = a @ b
    if bias is not None:
        pre = pre + bias
    y = ACT[act](pre)
    if keep is not None:
        y = torch.where(keep, y / (1.0 - p), torch.zeros_like(y))
    if out_dtype is not None and y.dtype != FP64:
        y = y.to(out_dtype)
    if residual is not None:
        y = y + residual
    return y


def attn_ref(q, k, v, causal, scale):
    """fp64 softmax(q k^T * scale, top-left causal) v, GQA by repeating k/v heads, one batch at a time."""
    B, Hq, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    if B * Hq * Sq == 0 or Skv == 0:
        return torch.zeros(q.shape, dtype=q.dtype, device=q.device) + 0 * q.sum() + 0 * k.sum() + 0 * v.sum()
    g = Hq // Hkv
    outs = []
    for bi in range(B):
        kb = k[bi].repeat_interleave(g, 0)
        vb = v[bi].repeat_interleave(g, 0)
        s = q[bi] @ kb.transpose(-1, -2) * scale
        if causal:
            mask = torch.arange(Skv, device=q.device)[None, :] > torch.arange(Sq, device=q.device)[:, None]
            s = s.masked_fill(mask, float("-inf"))
        outs.append(torch.softmax(s, -1) @ vb)
    return torch.stack(outs)


def sdpa(q, k, v, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def keep_mask(seed, M, N, p):
    from trifuse.reference.dropout import keep_mask as km

    return km(seed, M, N, p, device=DEV)


# ----------------------------------------------------------------------------------------------------------
# case registry and runner
# ----------------------------------------------------------------------------------------------------------
CASES = []


def add(name, fn, *args, gpu_only=False, min_left=0.0, **kw):
    CASES.append((name, fn, args, kw, gpu_only, min_left))


CURRENT = {"name": None, "t": None}


def _watchdog():
    while True:
        time.sleep(2.0)
        name, t = CURRENT["name"], CURRENT["t"]
        if name is not None and t is not None and time.time() - t > CASE_TIMEOUT:
            emit(f"ERROR {name} [>{CASE_TIMEOUT:.0f}s] HANG: no progress (deadlocked kernel or endless compile?); "
                 f"routes so far={routes()}")
            emit(f"SUMMARY aborted by the watchdog during {name} (elapsed {time.time() - T0:.0f}s)")
            if _OUT_FILE is not None:
                _OUT_FILE.flush()
            os._exit(3)


def run_all():
    counts = {"PASS": 0, "FAIL": 0, "ERROR": 0, "SKIP": 0}
    fatal = None
    selected = [c for c in CASES if (not ARGS or any(s in c[0] for s in ARGS))
                and not any(s in c[0] for s in EXCLUDE)]
    if LIST_ONLY:
        for c in selected:
            print(c[0])
        return 0
    if not SMOKE:
        threading.Thread(target=_watchdog, daemon=True).start()
    for name, fn, args, kw, gpu_only, min_left in selected:
        elapsed = time.time() - T0
        if fatal is not None:
            emit(f"SKIP  {name} (CUDA context lost in {fatal})")
            counts["SKIP"] += 1
            continue
        if SMOKE and gpu_only:
            emit(f"SKIP  {name} (GPU only)")
            counts["SKIP"] += 1
            continue
        if elapsed > BUDGET or (min_left and BUDGET - elapsed < min_left):
            emit(f"SKIP  {name} (time budget: {elapsed:.0f}s elapsed of {BUDGET:.0f}s)")
            counts["SKIP"] += 1
            continue
        torch.manual_seed(zlib.crc32(name.encode()))
        notes = Notes()
        TRACE.clear()
        msg = ""
        t = time.time()
        CURRENT.update(name=name, t=t)
        try:
            fn(notes, *args, **kw)
            sync()
            status = "PASS"
        except AssertionError as e:
            status, msg = "FAIL", str(e)
        except Exception as e:  # noqa: BLE001
            status = "ERROR"
            msg = f"{type(e).__name__}: {str(e).strip()[:600]}"
            tb = traceback.extract_tb(e.__traceback__)
            where = [f"{os.path.basename(f.filename)}:{f.lineno}" for f in tb if "trifuse" in f.filename
                     or "gpu_audit" in f.filename][-3:]
            if where:
                msg += f" @ {' <- '.join(reversed(where))}"
            if DEV.type == "cuda":
                try:
                    torch.cuda.synchronize()
                except Exception as e2:  # noqa: BLE001
                    fatal = name
                    msg += f" | CUDA context lost: {type(e2).__name__}: {str(e2)[:200]}"
        finally:
            CURRENT.update(name=None, t=None)
        dt = time.time() - t
        counts[status] += 1
        r = routes()
        line = f"{status:5s} {name} [{dt:.1f}s] {' '.join(notes)}"
        if r:
            line += f" routes={r}"
        if msg:
            line += f" :: {' '.join(msg.split())}"
        emit(line)
        notes.clear()
        gc.collect()
        if DEV.type == "cuda" and fatal is None:
            try:
                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass
    emit(f"SUMMARY pass={counts['PASS']} fail={counts['FAIL']} error={counts['ERROR']} skip={counts['SKIP']} "
         f"route_warnings={len(WARNINGS)} total={sum(counts.values())} elapsed={time.time() - T0:.0f}s")
    return 0 if counts["FAIL"] == counts["ERROR"] == 0 else 1


# ----------------------------------------------------------------------------------------------------------
# GEMM / linear forward
# ----------------------------------------------------------------------------------------------------------
def c_gemm_fwd(notes, M, N, K, dtype, act, *, api="gemm", bias=True, a_layout="contig", a_off=0,
               b_layout="contig", b_off=0, bias_layout="contig", bias_off=0, res=None, res_off=0,
               out_dtype=None, x3d=None, expect=None, not_expect=None, determinism=False):
    """api gemm: b (K, N) stored per b_layout; api linear: weight (N, K) stored per b_layout (b = weight.t())."""
    a = mk((M, K), dtype, a_layout, a_off)
    if api == "gemm":
        b = mk((K, N), dtype, b_layout, b_off, scale=K ** -0.5 if K else 1.0)
        w = None
    else:
        w = mk((N, K), dtype, b_layout, b_off, scale=K ** -0.5 if K else 1.0)
        b = w.t()
    bs = mk((N,), dtype, bias_layout, bias_off) if bias else None
    final = out_dtype or dtype
    r = mk((M, N), final, res, res_off) if res else None
    x = a if x3d is None else a.reshape(*x3d, K)
    rr = r if (r is None or x3d is None) else r.reshape(*x3d, N)

    def call():
        if api == "gemm":
            return trifuse.gemm(x, b, bs, activation=act, residual=rr, out_dtype=out_dtype)
        return trifuse.linear(x, w, bs, activation=act, residual=rr)

    out = call()
    sync()
    if out.dtype != final:
        raise Failure(f"out dtype {out.dtype} != {final}")
    out2 = out.reshape(M, N)
    ref = gemm_compose(a.double(), b.double(), None if bs is None else bs.double(), act,
                       None if r is None else r.double())
    if final == dtype:
        base = gemm_compose(a, b, bs, act, r)
        floor = FLOOR[dtype]
    elif final == FP32:  # 16-bit operands, fp32 out: torch's fp32 product of the same operands
        base = gemm_compose(a.float(), b.float(), None if bs is None else bs.float(), act, r)
        floor = 1e-3
    else:
        base = gemm_compose(a.float(), b.float(), None if bs is None else bs.float(), act, None).to(final)
        base = base + r if r is not None else base
        floor = FLOOR[final]
    check_close(notes, "out", out2, ref, base, floor)
    if determinism:
        check_equal("rerun", out, call())
    if expect:
        expect_route(notes, expect)
    if not_expect:
        expect_route(notes, not_expect, absent=True)


def c_gemm_dropout(notes, M, N, K, dtype, act, p, seed, *, api="linear", bias=True, expect=None, not_expect=None,
                   extra=False):
    a = rnd(M, K, dtype=dtype)
    w = rnd(N, K, dtype=dtype, scale=K ** -0.5)
    b = w.t() if api == "linear" else w.t().contiguous()
    bs = rnd(N, dtype=dtype) if bias else None

    def call(seed_, p_=p, training=True):
        if api == "linear":
            return trifuse.linear(a, w, bs, activation=act, dropout_p=p_, seed=seed_, training=training)
        return trifuse.gemm(a, b, bs, activation=act, dropout_p=p_, seed=seed_)

    out = call(seed)
    sync()
    if expect:
        expect_route(notes, expect)
    if not_expect:
        expect_route(notes, not_expect, absent=True)
    seed_int = int(seed.item()) if isinstance(seed, torch.Tensor) else int(seed)
    keep = keep_mask(seed_int, M, N, p)
    full = gemm_compose(a.double(), b.double(), None if bs is None else bs.double(), act)
    check_finite("out", out)
    dropped_nonzero = int(((out != 0) & ~keep).sum())
    if dropped_nonzero:
        raise Failure(f"{dropped_nonzero} elements the mask drops are nonzero (mask mismatch vs reference.dropout)")
    kept_zero = int(((out == 0) & keep & (full.abs() > 1e-2)).sum())
    if kept_zero:
        raise Failure(f"{kept_zero} kept elements (|value| > 1e-2) are zero (mask mismatch)")
    frac = 1.0 - float(keep.float().mean())
    notes.add(f"dropfrac={frac:.4f}")
    if abs(frac - p) > 0.01 + 3 * math.sqrt(p * (1 - p) / max(1, M * N)):
        raise Failure(f"dropped fraction {frac:.4f} far from p={p}")
    ref = torch.where(keep, full / (1 - p), torch.zeros_like(full))
    base = gemm_compose(a, b, bs, act, keep=keep, p=p)
    check_close(notes, "kept", out, ref, base, FLOOR[dtype])
    check_equal("same seed", out, call(seed))
    if extra:
        # seed None: reproducible under torch.manual_seed, different without
        torch.manual_seed(1234)
        o1 = call(None)
        torch.manual_seed(1234)
        o2 = call(None)
        o3 = call(None)
        check_equal("seed=None under manual_seed", o1, o2)
        if torch.equal(o1 == 0, o3 == 0):
            raise Failure("seed=None: two unseeded calls gave the same mask")
        # a seed tensor (int32, on the device and on the CPU) gives the int seed's mask
        check_equal("int64 device seed tensor", out, call(torch.tensor(seed_int, dtype=torch.int64, device=DEV)))
        check_equal("cpu seed tensor", out, call(torch.tensor([seed_int])))
        check_equal("int32 device seed tensor", call(5), call(torch.tensor(5, dtype=torch.int32, device=DEV)))
        if api == "linear":
            nodrop = call(seed, 0.0)
            check_equal("training=False", nodrop, call(seed, training=False))


def c_gemm_seed_view(notes):
    """A seed tensor that is an unaligned int64 view gives the same output as the int seed (ws dropout route)."""
    M = N = K = Z(4096, 64)
    a = rnd(M, K)
    w = rnd(N, K, scale=K ** -0.5)
    bs = rnd(N)
    seeds = torch.tensor([0, 77], dtype=torch.int64, device=DEV)
    o1 = trifuse.linear(a, w, bs, activation="silu", dropout_p=0.1, seed=77)
    o2 = trifuse.linear(a, w, bs, activation="silu", dropout_p=0.1, seed=seeds[1:])
    check_equal("seed view", o1, o2)
    expect_route(notes, "gemm:ws")


def c_gemm_zero(notes, dtype):
    """Zero-size M, N, K forward and backward against fp64 autograd."""
    probs = []
    for (M, N, K) in [(0, 64, 32), (48, 0, 32), (48, 64, 0), (0, 0, 0)]:
        x = rnd(M, K, dtype=dtype).requires_grad_()
        w = rnd(N, K, dtype=dtype).requires_grad_()
        bs = rnd(N, dtype=dtype).requires_grad_()
        out = trifuse.linear(x, w, bs, activation="gelu")
        xr, wr, br = leaf64(x), leaf64(w), leaf64(bs)
        ref = F.gelu(xr @ wr.t() + br)
        do = rnd(M, N, dtype=dtype)
        check_close(notes, f"{M}x{N}x{K}", out, ref, None, FLOOR[dtype])
        g = grads(out, (x, w, bs), do)
        gr = grads(ref, (xr, wr, br), do.double())
        for nm, gt, gref in zip(("dx", "dw", "db"), g, gr):
            if gt is None:
                probs.append(f"{M}x{N}x{K} {nm} None")
                continue
            gref = torch.zeros_like(gt, dtype=FP64) if gref is None else gref
            check_close(notes, f"{nm}", gt, gref, None, FLOOR[dtype])
    if probs:
        raise Failure("; ".join(probs))


# ----------------------------------------------------------------------------------------------------------
# GEMM / linear backward
# ----------------------------------------------------------------------------------------------------------
def c_gemm_bwd(notes, M, N, K, dtype, act, *, api="linear", bias=True, recompute=False, p=0.0, seed=None,
               res=False, out_dtype=None, x3d=None, expect=None, both_recompute=False):
    x = rnd(M, K, dtype=dtype).requires_grad_()
    if api == "linear":
        w = rnd(N, K, dtype=dtype, scale=K ** -0.5).requires_grad_()
    else:
        w = rnd(K, N, dtype=dtype, scale=K ** -0.5).requires_grad_()
    bs = rnd(N, dtype=dtype).requires_grad_() if bias else None
    final = out_dtype or dtype
    r = rnd(M, N, dtype=final).requires_grad_() if res else None
    keep = keep_mask(seed, M, N, p) if p > 0 else None
    do = rnd(M, N, dtype=final)
    leaves = [t for t in (x, w, bs, r) if t is not None]
    names = [n for n, t in zip(("dx", "dw", "dbias", "dres"), (x, w, bs, r)) if t is not None]

    def fwd(rc):
        xx = x if x3d is None else x.view(*x3d, K)
        rr = r if (r is None or x3d is None) else r.view(*x3d, N)
        if api == "linear":
            o = trifuse.linear(xx, w, bs, activation=act, dropout_p=p, seed=seed, residual=rr, recompute=rc)
        else:
            o = trifuse.gemm(xx, w, bs, activation=act, dropout_p=p, seed=seed, residual=rr, out_dtype=out_dtype,
                             recompute=rc)
        return o.reshape(M, N)

    # fp64 reference and torch's own low-precision composition
    l64 = [leaf64(t) for t in leaves]
    x64, w64 = l64[0], l64[1]
    b64 = l64[2] if bias else None
    r64 = l64[-1] if res else None
    bm64 = w64.t() if api == "linear" else w64
    ref = gemm_compose(x64, bm64, b64, act, r64, keep, p)
    gref = grads(ref, l64, do.double())
    full = gemm_compose(x64.detach(), bm64.detach(), None if b64 is None else b64.detach(), act)  # no mask
    lt = [t.detach().clone().requires_grad_() for t in leaves]
    xt, wt = lt[0], lt[1]
    bt = lt[2] if bias else None
    rt = lt[-1] if res else None
    if final == dtype:
        base = gemm_compose(xt, wt.t() if api == "linear" else wt, bt, act, rt, keep, p)
    else:
        base = gemm_compose(xt, wt.t() if api == "linear" else wt, bt, act, None, keep, p, out_dtype=final)
        base = base + rt if rt is not None else base
    gbase = grads(base, lt, do)
    for rc in ((False, True) if both_recompute else (recompute,)):
        TRACE.clear()
        out = fwd(rc)
        if expect:
            expect_route(notes, expect)
        tag = "rc" if rc else ""
        check_close(notes, f"{tag}out", out, ref, base, FLOOR[final] if final == dtype else FLOOR[dtype])
        if keep is not None:
            recovered = (out.detach() - (r.detach() if r is not None else 0)) != 0  # the mask the forward used
            big = full.abs() > 1e-2
            mism = int(((recovered != keep) & big).sum())
            if mism:
                raise Failure(f"{tag} forward output's zero pattern disagrees with reference.dropout mask at {mism} elems")
        g = grads(out, leaves, do)
        for nm, gt, gr, gb in zip(names, g, gref, gbase):
            if gt is None:
                raise Failure(f"{tag}{nm} is None")
            check_close(notes, f"{tag}{nm}", gt, gr, gb, FLOOR[dtype])


# ----------------------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------------------
def make_qkv(B, Hq, Hkv, Sq, Skv, D, dtype, layout, qk_scale=1.0):
    """q, k, v (B, H, S, D) views requiring grad (through their storage leaves), stored per layout:
    bhsd | bshd (HF's (B, S, H, D) transposed) | qkv (one fused (B, S, 3, H, D) projection) |
    misalign (q 1 element past alignment, k 3 elements past, v with a head-dim stride of 2) |
    expand_kv (k, v broadcast over the batch: stride 0)."""
    def r(*s, sc=1.0):
        return (torch.randn(*s, device=DEV) * sc).to(dtype)

    if layout == "bhsd":
        q, k, v = r(B, Hq, Sq, D, sc=qk_scale), r(B, Hkv, Skv, D, sc=qk_scale), r(B, Hkv, Skv, D)
        for t in (q, k, v):
            t.requires_grad_()
        return q, k, v
    if layout == "bshd":
        qs, ks, vs = r(B, Sq, Hq, D, sc=qk_scale), r(B, Skv, Hkv, D, sc=qk_scale), r(B, Skv, Hkv, D)
        for t in (qs, ks, vs):
            t.requires_grad_()
        return qs.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2)
    if layout == "qkv":
        assert Sq == Skv and Hq == Hkv
        base = r(B, Sq, 3, Hq, D)
        with torch.no_grad():
            base[:, :, :2] *= qk_scale
        base.requires_grad_()
        q, k, v = (base[:, :, i].transpose(1, 2) for i in range(3))
        return q, k, v
    if layout == "misalign":
        def off(shape, o, sc):
            data = r(*shape, sc=sc)
            buf = torch.zeros(data.numel() + o, dtype=dtype, device=DEV)
            buf[o:].copy_(data.reshape(-1))
            buf.requires_grad_()
            return buf[o:].view(shape)
        q = off((B, Hq, Sq, D), 1, qk_scale)
        k = off((B, Hkv, Skv, D), 3, qk_scale)
        vs = r(B, Hkv, Skv, 2 * D).requires_grad_()
        return q, k, vs[..., ::2]
    if layout == "expand_kv":
        q = r(B, Hq, Sq, D, sc=qk_scale).requires_grad_()
        k1 = r(1, Hkv, Skv, D, sc=qk_scale).requires_grad_()
        v1 = r(1, Hkv, Skv, D).requires_grad_()
        return q, k1.expand(B, Hkv, Skv, D), v1.expand(B, Hkv, Skv, D)
    raise ValueError(layout)


def make_do(mode, out):
    B, H, S, D = out.shape
    if mode == "randn":
        return rnd(B, H, S, D, dtype=out.dtype)
    if mode == "bshd":
        return rnd(B, S, H, D, dtype=out.dtype).transpose(1, 2)
    if mode == "expand_d":  # strides (0, 0, 0, 1): unit last stride, zero others
        return rnd(D, dtype=out.dtype).expand(B, H, S, D)
    if mode == "sum":  # all strides 0
        return torch.ones((), dtype=out.dtype, device=DEV).expand(B, H, S, D)
    raise ValueError(mode)


def c_attn(notes, B, Hq, Hkv, Sq, Skv, D, dtype, causal, *, layout="bhsd", bwd=True, do_mode="randn",
           scale=None, qk_scale=1.0, expect_fwd=None, expect_bwd=None, not_expect=None, determinism=False):
    q, k, v = make_qkv(B, Hq, Hkv, Sq, Skv, D, dtype, layout, qk_scale)
    sc = scale if scale is not None else 1.0 / math.sqrt(D)
    out = trifuse.attention(q, k, v, causal=causal, scale=scale)
    sync()
    if expect_fwd:
        expect_route(notes, expect_fwd)
    q64, k64, v64 = leaf64(q), leaf64(k), leaf64(v)
    ref = attn_ref(q64, k64, v64, causal, sc)
    fl = ATT_FLOOR[dtype]
    qt, kt, vt = (t.detach().clone().requires_grad_() for t in (q, k, v))
    base = None
    if Sq > 0 and Skv > 0 and B * Hq > 0:
        base = sdpa(qt, kt, vt, causal, sc)
    check_close(notes, "out", out, ref, base, fl)
    if determinism:
        check_equal("fwd rerun", out, trifuse.attention(q, k, v, causal=causal, scale=scale))
    if not bwd:
        return
    do = make_do(do_mode, out)
    n_before = len(TRACE)
    g = grads(out, (q, k, v), do)
    sync()
    bwd_routes = TRACE[n_before:]
    gr = grads(ref, (q64, k64, v64), do.double())
    # SDPA's backward takes a dense dO: with the (0, 0, 0, 1)-strided one it faulted (illegal address) on
    # the H100 (torch 2.11), after trifuse's backward had synchronized cleanly (eighteenth session).
    gb = grads(base, (qt, kt, vt), do.contiguous()) if base is not None else (None, None, None)
    for nm, gt, r_, b_ in zip(("dq", "dk", "dv"), g, gr, gb):
        if gt is None:
            raise Failure(f"{nm} is None")
        r_ = torch.zeros_like(gt, dtype=FP64) if r_ is None else r_
        check_close(notes, nm, gt, r_, b_, fl)
    if determinism:
        g2 = grads(trifuse.attention(q, k, v, causal=causal, scale=scale), (q, k, v), do)
        for nm, a_, b_ in zip(("dq", "dk", "dv"), g, g2):
            check_equal(f"{nm} rerun", a_, b_)
    if expect_bwd and not SMOKE:
        if expect_bwd not in bwd_routes:
            msg = f"WARN route: expected {expect_bwd} in backward"
            notes.add(msg)
            WARNINGS.append(msg)
    if not_expect:
        expect_route(notes, not_expect, absent=True)


# ----------------------------------------------------------------------------------------------------------
# norms
# ----------------------------------------------------------------------------------------------------------

def _in_order(tensors, present):
    """tensors (the present ones, in order) back in their slots, None where absent."""
    it = iter(tensors)
    return [next(it) if p else None for p in present]

def c_norm(notes, kind, M, N, dtype, *, w=True, b=True, ib=False, res=False, wdtype=None, layout="contig",
           x_off=0, w_off=0, res_layout="contig", eps="default", bwd=True, determinism=False):
    """kind: layer_norm | rms_norm | add_layer_norm | add_rms_norm."""
    is_rms = "rms" in kind
    wdt = wdtype or dtype
    x = mk((M, N), dtype, layout, x_off, grad=True)
    wt = mk((N,), wdt, "contig", w_off, grad=True) if w else None
    if wt is not None:
        with torch.no_grad():
            wt.add_(1.0)
    bt = mk((N,), wdt, grad=True, scale=0.5) if (b and not is_rms) else None
    ibt = mk((N,), wdt, grad=True, scale=0.5) if ib else None
    rt = mk((M, N), dtype, res_layout, grad=True) if res else None
    if eps == "default":
        eps_v = 1e-6 if is_rms else 1e-5
        kw_eps = {}
    else:
        eps_v = float(torch.finfo(torch.float32).eps) if eps is None else eps
        kw_eps = {"eps": eps}

    def call():
        if kind == "layer_norm":
            return trifuse.layer_norm(x, wt, bt, input_bias=ibt, **kw_eps), None
        if kind == "rms_norm":
            return trifuse.rms_norm(x, wt, input_bias=ibt, **kw_eps), None
        if kind == "add_layer_norm":
            return trifuse.add_layer_norm(x, rt, wt, bt, input_bias=ibt, **kw_eps)
        return trifuse.add_rms_norm(x, rt, wt, input_bias=ibt, **kw_eps)

    y, h = call()
    sync()
    ins = [t for t in (x, wt, bt, ibt, rt) if t is not None]
    names = [n for n, t in zip(("dx", "dw", "db", "dib", "dres"), (x, wt, bt, ibt, rt)) if t is not None]
    present = [t is not None for t in (x, wt, bt, ibt, rt)]
    l64 = [leaf64(t) for t in ins]
    x64, w64, b64, ib64, r64 = _in_order(l64, present)

    def compose(xx, ww, bb, ii, rr, low):
        hh = xx
        if ii is not None:
            hh = hh + ii
        if rr is not None:
            hh = hh + rr
        if low:  # torch in the data's dtype (weights cast to it), its own ops
            h2 = hh.to(dtype)
            w2 = ww.to(dtype) if ww is not None else None
            b2 = bb.to(dtype) if bb is not None else None
            yy = F.rms_norm(h2, (N,), w2, eps_v) if is_rms else F.layer_norm(h2, (N,), w2, b2, eps_v)
            return yy, h2
        if is_rms:
            yy = hh / torch.sqrt((hh * hh).mean(-1, keepdim=True) + eps_v)
        else:
            mu = hh.mean(-1, keepdim=True)
            yy = (hh - mu) / torch.sqrt(((hh - mu) ** 2).mean(-1, keepdim=True) + eps_v)
        if ww is not None:
            yy = yy * ww
        if bb is not None:
            yy = yy + bb
        return yy, hh

    ref_y, ref_h = compose(x64, w64, b64, ib64, r64, False)
    lt = [t.detach().clone().requires_grad_() for t in ins]
    xt, wtt, btt, ibtt, rtt = _in_order(lt, present)
    base_y, base_h = compose(xt, wtt, btt, ibtt, rtt, True)
    fl = FLOOR[dtype]
    if y.dtype != dtype:
        raise Failure(f"y dtype {y.dtype} != x dtype {dtype}")
    check_close(notes, "y", y, ref_y, base_y, fl)
    if h is not None:
        check_close(notes, "h", h, ref_h, base_h, fl)
    if determinism:
        y2, _ = call()
        check_equal("fwd rerun", y, y2)
    if not bwd:
        return
    gy = rnd(M, N, dtype=dtype)
    gh = rnd(M, N, dtype=dtype) if h is not None else None
    outs = (y, h) if h is not None else (y,)
    gouts = (gy, gh) if h is not None else (gy,)
    g = grads(outs, ins, gouts)
    gr = grads((ref_y, ref_h) if h is not None else (ref_y,), l64,
               tuple(t.double() for t in gouts))
    gb = grads((base_y, base_h) if h is not None else (base_y,), lt, gouts)
    for nm, gt, r_, b_ in zip(names, g, gr, gb):
        if gt is None:
            raise Failure(f"{nm} is None")
        if gt.dtype != (wdt if nm in ("dw", "db", "dib") else dtype):
            raise Failure(f"{nm} dtype {gt.dtype}")
        r_ = torch.zeros_like(gt, dtype=FP64) if r_ is None else r_
        check_close(notes, nm, gt, r_, b_, fl)
    if determinism:
        y2, h2 = call()
        g2 = grads((y2, h2) if h2 is not None else (y2,), ins, gouts)
        for nm, a_, b_ in zip(names, g, g2):
            check_equal(f"{nm} rerun", a_, b_)


# ----------------------------------------------------------------------------------------------------------
# softmax
# ----------------------------------------------------------------------------------------------------------
def c_softmax(notes, M, N, dtype, *, log=False, layout="contig", x_off=0, dim=-1, bwd=True, specials=False,
              do_mode="randn", determinism=False, scale=3.0):
    """layout contig | t | padN; dim=0 softmaxes over the first of (N, M) rows instead (a (N, M) tensor)."""
    shape = (M, N) if dim in (-1, 1) else (N, M)
    x = mk(shape, dtype, layout, x_off, scale=scale, grad=True)
    if specials:
        with torch.no_grad():
            xv = x.detach()  # shares x's storage
            # row 0 all -inf (NaN row), row 1 half -inf, row 2 one +inf (NaN row), row 3 one NaN, row 4 large
            sl = (lambda i: xv[i]) if dim in (-1, 1) else (lambda i: xv[:, i])
            sl(0).fill_(float("-inf"))
            sl(1)[: max(1, N // 2)] = float("-inf")
            sl(2)[N // 3] = float("inf")
            sl(3)[N // 5] = float("nan")
            sl(4).mul_(1000.0)
    fn = trifuse.log_softmax if log else trifuse.softmax
    tfn = torch.log_softmax if log else torch.softmax
    y = fn(x, dim=dim)
    sync()
    x64 = leaf64(x)
    ref = tfn(x64, dim)
    xt = x.detach().clone().requires_grad_()
    base = tfn(xt, dim)
    check_close(notes, "y", y, ref, base, SM_FLOOR[dtype])
    if determinism:
        check_equal("fwd rerun", y, fn(x, dim=dim))
    if not bwd or specials:
        return
    if do_mode == "randn":
        dy = rnd(*shape, dtype=dtype)
    elif do_mode == "expand":
        dy = rnd(shape[-1], dtype=dtype).expand(shape)
    else:
        dy = rnd(shape[-1], shape[0], dtype=dtype).t()
    (g,) = grads(y, (x,), dy)
    (gr,) = grads(ref, (x64,), dy.double())
    (gb,) = grads(base, (xt,), dy)
    check_close(notes, "dx", g, gr, gb, SM_FLOOR[dtype])
    if determinism:
        (g2,) = grads(fn(x, dim=dim), (x,), dy)
        check_equal("dx rerun", g, g2)


# ----------------------------------------------------------------------------------------------------------
# errors, compile
# ----------------------------------------------------------------------------------------------------------
def c_device_mismatch(notes):
    cpu = torch.device("meta" if SMOKE else "cpu")  # the "other" device (smoke mode: the kernels' device is cpu)
    x = rnd(64, 128)
    w = rnd(256, 128)
    bs = rnd(256)
    q = rnd(1, 2, 16, 64)
    xn = rnd(8, 256)
    wn = rnd(256)
    checks = [
        ("linear(weight cpu)", lambda: trifuse.linear(x, w.to(cpu))),
        ("linear(bias cpu)", lambda: trifuse.linear(x, w, bs.to(cpu))),
        ("linear(x cpu)", lambda: trifuse.linear(x.to(cpu), w, bs)),
        ("linear(all cpu)", lambda: trifuse.linear(x.to(cpu), w.to(cpu))),
        ("linear(weight cpu, grad)", lambda: trifuse.linear(x.requires_grad_(), w.to(cpu).requires_grad_())),
        ("gemm(b cpu)", lambda: trifuse.gemm(x, w.t().to(cpu))),
        ("gemm(residual cpu)", lambda: trifuse.gemm(x, w.t(), residual=torch.zeros(64, 256, dtype=BF16, device=cpu))),
        ("gemm(residual cpu, dropout)", lambda: trifuse.gemm(x, w.t(), dropout_p=0.1, seed=1,
                                                              residual=torch.zeros(64, 256, dtype=BF16, device=cpu))),
        ("attention(k cpu)", lambda: trifuse.attention(q, q.to(cpu), q)),
        ("attention(v cpu, causal)", lambda: trifuse.attention(q, q, q.to(cpu), causal=True)),
        ("attention(q cpu)", lambda: trifuse.attention(q.to(cpu), q, q)),
        ("layer_norm(weight cpu)", lambda: trifuse.layer_norm(xn, wn.to(cpu), wn)),
        ("layer_norm(bias cpu)", lambda: trifuse.layer_norm(xn, wn, wn.to(cpu))),
        ("rms_norm(weight cpu)", lambda: trifuse.rms_norm(xn, wn.to(cpu))),
        ("rms_norm(input_bias cpu)", lambda: trifuse.rms_norm(xn, wn, input_bias=wn.to(cpu))),
        ("add_rms_norm(residual cpu)", lambda: trifuse.add_rms_norm(xn, xn.to(cpu), wn)),
        ("add_layer_norm(x cpu)", lambda: trifuse.add_layer_norm(xn.to(cpu), xn, wn)),
        ("softmax(x cpu)", lambda: trifuse.softmax(xn.to(cpu))),
        ("log_softmax(x cpu, dim=0)", lambda: trifuse.log_softmax(xn.to(cpu), dim=0)),
    ]
    probs = []
    for nm, fn in checks:
        try:
            fn()
            sync()
            probs.append(f"{nm}: no error")
        except (ValueError, TypeError) as e:
            if "trifuse" not in str(e):
                probs.append(f"{nm}: {type(e).__name__} without trifuse's message: {str(e)[:120]}")
        except Exception as e:  # noqa: BLE001
            probs.append(f"{nm}: {type(e).__name__}: {str(e)[:160]}")
    notes.add(f"checked={len(checks)}")
    if probs:
        raise Failure(" | ".join(probs))


def c_compile(notes):
    torch._dynamo.reset()
    B, S, H, D = 2, 256, 4, 64
    C = H * D
    dtype = BF16
    x0 = rnd(B, S, C, dtype=dtype)
    w0 = rnd(3 * C, C, dtype=dtype, scale=C ** -0.5)
    b0 = rnd(3 * C, dtype=dtype, scale=0.1)
    g0 = (1 + 0.1 * torch.randn(3 * C, device=DEV)).to(dtype)
    gy = rnd(B, H, S, D, dtype=dtype)

    def f(x, w, b, g):
        h = trifuse.linear(x, w, b, activation="silu")
        h = trifuse.rms_norm(h, g)
        q, k, v = h.view(B, S, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        o = trifuse.attention(q, k, v, causal=True)
        return trifuse.softmax(o, dim=-1)

    def f_torch(x, w, b, g, hi):
        h = F.silu(F.linear(x, w, b))
        if hi:
            h = h / torch.sqrt((h * h).mean(-1, keepdim=True) + 1e-6) * g
        else:
            h = F.rms_norm(h, (3 * C,), g, 1e-6)
        q, k, v = h.view(B, S, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        o = attn_ref(q, k, v, True, 1 / math.sqrt(D)) if hi else sdpa(q, k, v, True, 1 / math.sqrt(D))
        return torch.softmax(o, -1)

    def leaves():
        return [t.detach().clone().requires_grad_() for t in (x0, w0, b0, g0)]

    le = leaves()
    ye = f(*le)
    ge = grads(ye, le, gy)
    lc = leaves()
    # (the smoke mode checks this case's own logic only: torch.compile does not run Triton's interpreter)
    cf = f if SMOKE else torch.compile(f, fullgraph=True)
    yc = cf(*lc)
    gc_ = grads(yc, lc, gy)
    sync()
    lr = [leaf64(t) for t in (x0, w0, b0, g0)]
    yr = f_torch(*lr, True)
    gr = grads(yr, lr, gy.double())
    lt = leaves()
    yt = f_torch(*lt, False)
    gt = grads(yt, lt, gy)
    notes.add(f"compiled-vs-eager:{max_err(yc, ye):.1e}")
    check_close(notes, "eager", ye, yr, yt, FLOOR[dtype])
    check_close(notes, "compiled", yc, yr, ye, FLOOR[dtype])
    for nm, a_, c_, r_, t_ in zip(("dx", "dw", "db", "dg"), ge, gc_, gr, gt):
        check_close(notes, f"eager_{nm}", a_, r_, t_, FLOOR[dtype])
        check_close(notes, f"compiled_{nm}", c_, r_, a_, FLOOR[dtype])


# ----------------------------------------------------------------------------------------------------------
# the cases, in priority order (the budget skips from the end)
# ----------------------------------------------------------------------------------------------------------
K4 = Z(4096, 64)
WS = "gemm:ws"
TMA = "gemm:gemm_tma_kernel"
PORT = "gemm:gemm_fwd_kernel"

add("device_mismatch_errors", c_device_mismatch)

# --- warp-specialized Gluon GEMM (bias + silu/gelu/gelu_tanh, M*N*K >= 2^36, N, K <= 4096) ---
# An out dtype other than the operands' takes the Triton TMA kernel (the Gluon kernels stage 16-bit tiles).
add("gemm_ws_bf16_silu_bias_out_fp32", c_gemm_fwd, K4, K4, K4, BF16, "silu", out_dtype=FP32,
    expect=TMA)
add("gemm_ws_bf16_gelu_bias_out_fp16", c_gemm_fwd, K4, K4, K4, BF16, "gelu", out_dtype=FP16,
    expect=TMA)
add("linear_ws_bf16_silu_bias_x3d_determinism", c_gemm_fwd, K4, K4, K4, BF16, "silu", api="linear",
    x3d=(4, Z(1024, 16)), expect=WS, determinism=True)
add("gemm_ws_bf16_gelu_bias_5000x4096x4096", c_gemm_fwd, Z(5000, 70), K4, K4, BF16, "gelu", expect=WS)
add("linear_ws_bf16_gelu_tanh_nobias_4200x4000x4096", c_gemm_fwd, Z(4200, 70), Z(4000, 56), K4, BF16,
    "gelu_tanh", api="linear", bias=False, expect=WS)
add("gemm_ws_fp16_silu_nobias", c_gemm_fwd, K4, K4, K4, FP16, "silu", bias=False, expect=WS)
add("linear_ws_fp16_gelu_bias_4400x4000x4000", c_gemm_fwd, Z(4400, 70), Z(4000, 56), Z(4000, 40), FP16, "gelu",
    api="linear", expect=WS)
add("gemm_ws_fp16_gelu_tanh_bias_b_transposed", c_gemm_fwd, K4, K4, K4, FP16, "gelu_tanh", b_layout="t",
    expect=WS)
add("linear_ws_bf16_silu_padded_x_w_and_bias_off1", c_gemm_fwd, K4, K4, K4, BF16, "silu", api="linear",
    a_layout="pad8", b_layout="pad8", bias_off=1, expect=WS)
add("linear_ws_dropout_bf16_silu_p0.1", c_gemm_dropout, K4, K4, K4, BF16, "silu", 0.1, 1234, expect=WS,
    extra=True)
add("linear_ws_dropout_seed_tensor_view", c_gemm_seed_view)

# --- Gluon attention forward + Gluon dK/dV backward ---
S2 = Z(2048, 40)
H16 = Z(16, 4)
add("attn_ws_bf16_d128_B2H16S2048_fwd_bwd_determinism", c_attn, 2, H16, H16, S2, S2, 128, BF16, False,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv", determinism=True)
add("attn_ws_fp16_d128_causal_bshd_do_bshd", c_attn, 2, H16, H16, S2, S2, 128, FP16, True, layout="bshd",
    do_mode="bshd", expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_d64_causal_B1H16S4096", c_attn, 1, H16, H16, Z(4096, 48), Z(4096, 48), 64, BF16, True,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_fp16_d64_noncausal_gqa4_B2H16S2048", c_attn, 2, H16, Z(4, 2), S2, S2, 64, FP16, False,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_d128_causal_gqa8_split", c_attn, 2, H16, Z(2, 1), S2, S2, 128, BF16, True,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_fused_qkv_views", c_attn, 2, H16, H16, S2, S2, 128, BF16, False, layout="qkv",
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_sq2048_skv1100", c_attn, 2, H16, H16, S2, Z(1100, 24), 128, BF16, False,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_sq1101_skv2048_bshd", c_attn, 2, H16, H16, Z(1101, 23), S2, 128, BF16, False, layout="bshd",
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_kv_expanded_over_batch_stride0", c_attn, 2, H16, H16, S2, S2, 128, BF16, False,
    layout="expand_kv", expect_fwd="attn:attention_fwd", expect_bwd="attn:attention_bwd_dkdv")  # zero strides: no TMA
add("attn_ws_bf16_do_strides_0001", c_attn, 2, H16, H16, S2, S2, 128, BF16, False, do_mode="expand_d",
    expect_bwd="attn:attention_bwd_dkdv")  # a zero-strided dO is not TMA-addressable
add("attn_misaligned_q1_k3_vstride2_fallback", c_attn, 2, H16, H16, S2, S2, 128, BF16, True, layout="misalign",
    not_expect="attn:ws_fwd")
add("attn_ws_fp16_peaky_logits_fwd", c_attn, 2, H16, H16, S2, S2, 128, FP16, False, qk_scale=4.0, bwd=False,
    expect_fwd="attn:ws_fwd")

# --- dropout on the Triton TMA and portable kernels ---
add("gemm_tma_dropout_fp16_gelu_p0.2_seed-1", c_gemm_dropout, K4, K4, Z(2048, 32), FP16, "gelu", 0.2, -1,
    api="gemm", expect=TMA)
add("linear_portable_dropout_bf16_relu_p0.5", c_gemm_dropout, 300, 500, 200, BF16, "relu", 0.5, 2 ** 40 + 7,
    extra=True)

# --- Triton TMA GEMM (large, layouts, activations) ---
# --- the cooperative Gluon kernel with a producer warp (ops.gemm.coop_applies; traced as gemm:ws) ---
add("gemm_coop_bf16_none_nobias_4096^3", c_gemm_fwd, K4, K4, K4, BF16, "none", bias=False, expect=WS)
add("linear_coop_bf16_silu_bias_ragged_5003x4104x4360", c_gemm_fwd, Z(5003, 67), Z(4104, 72), Z(4360, 40), BF16,
    "silu", api="linear", expect=WS)
add("gemm_coop_fp16_gelu_tanh_8192x4096x8192", c_gemm_fwd, Z(8192, 64), K4, Z(8192, 64), FP16, "gelu_tanh",
    expect=WS)
add("linear_tma_bf16_relu_expanded_bias", c_gemm_fwd, K4, K4, K4, BF16, "relu", api="linear", bias_layout="expand",
    expect=TMA)
add("gemm_tma_fp16_relu2_bias_residual", c_gemm_fwd, K4, K4, Z(2048, 32), FP16, "relu2", res="contig",
    expect=TMA)
add("gemm_tma_fp16_leaky_ragged_3001x5000x1000", c_gemm_fwd, Z(3001, 67), Z(5000, 72), Z(1000, 40), FP16,
    "leaky_relu", bias=False, expect=TMA)
add("gemm_tma_bf16_silu_a_transposed", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "silu", a_layout="t", expect=TMA)
add("gemm_tma_bf16_gelu_tanh_out_fp32", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "gelu_tanh", out_dtype=FP32,
    expect=TMA)
add("gemm_tma_bf16_gelu_K8", c_gemm_fwd, K4, K4, 8, BF16, "gelu", expect=TMA)
add("gemm_tma_bf16_silu_N8_M65536", c_gemm_fwd, Z(65536, 96), 8, Z(256, 16), BF16, "silu", expect=TMA)
add("gemm_tma_bf16_padded_a_b_rows", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "none", a_layout="pad8",
    b_layout="pad8", expect=TMA)
add("gemm_tma_bf16_relu_residual_off1_bias_off1", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "relu", res="contig",
    res_off=1, bias_off=1, expect=TMA)
add("gemm_tma_fp16_gelu_residual_expanded_rows", c_gemm_fwd, K4, K4, Z(2048, 32), FP16, "gelu", res="expand",
    expect=TMA)

# --- misaligned / odd-stride operands (must fall back, stay correct) ---
add("linear_bf16_silu_x_off1_4096^3_fallback", c_gemm_fwd, K4, K4, K4, BF16, "silu", api="linear", a_off=1,
    not_expect=(WS, TMA))
add("gemm_bf16_none_b_off3_fallback", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "none", b_off=3,
    not_expect=(WS, TMA))
add("linear_bf16_silu_x_rowstride4100_fallback", c_gemm_fwd, Z(2048, 32), K4, K4, BF16, "silu", api="linear",
    a_layout="pad4", not_expect=(WS, TMA))
add("linear_bf16_gelu_weight_off1_and_transposed", c_gemm_fwd, Z(2048, 32), Z(2048, 48), Z(2048, 40), BF16,
    "gelu", api="linear", b_layout="t", b_off=1, not_expect=(WS, TMA))

# --- backward ---
add("linear_bwd_bf16_silu_bias_x3d", c_gemm_bwd, Z(2048, 32), K4, Z(1024, 32), BF16, "silu", x3d=(2, Z(1024, 16)),
    expect=TMA)
add("linear_bwd_bf16_gelu_recompute_4096^3", c_gemm_bwd, K4, K4, K4, BF16, "gelu", recompute=True, expect=WS)
add("linear_bwd_bf16_gelu_tanh_dropout_p0.1_both_recompute", c_gemm_bwd, Z(1024, 32), Z(2048, 48), Z(1024, 32),
    BF16, "gelu_tanh", p=0.1, seed=77, both_recompute=True)
add("gemm_bwd_fp16_gelu_residual_out_fp32", c_gemm_bwd, 1000, 1536, 768, FP16, "gelu", api="gemm", res=True,
    out_dtype=FP32)
add("linear_bwd_fp16_relu2_nobias_residual", c_gemm_bwd, Z(4096, 64), Z(2048, 48), Z(2048, 32), FP16, "relu2",
    bias=False, res=True)

# --- torch.compile (inductor; the traced path takes the Triton kernels, never the Gluon ones) ---
add("torch_compile_fullgraph_linear_rms_attn_softmax_fwd_bwd", c_compile, min_left=70)

# --- norms ---
for width, M in ((1, 4099), (3, 4099), (4097, 1031), (65537, 67)):
    add(f"layer_norm_bf16_w{width}_bias_inbias_fwd_bwd", c_norm, "layer_norm", Z(M, 5), Z(width, min(width, 300)),
        BF16, ib=True)
    add(f"rms_norm_fp16_w{width}_fwd_bwd", c_norm, "rms_norm", Z(M, 5), Z(width, min(width, 300)), FP16)
add("add_rms_norm_bf16_4096^2_inbias_res_determinism", c_norm, "add_rms_norm", K4, K4, BF16, ib=True, res=True,
    determinism=True)
add("add_layer_norm_fp16_2048x5120_inbias_res", c_norm, "add_layer_norm", Z(2048, 16), Z(5120, 80), FP16, ib=True,
    res=True)
add("add_rms_norm_bf16_w65537_res", c_norm, "add_rms_norm", Z(67, 5), Z(65537, 300), BF16, res=True)
add("rms_norm_bf16_weight_fp32_eps_none", c_norm, "rms_norm", Z(2048, 16), K4, BF16, wdtype=FP32, eps=None)
add("layer_norm_bf16_x_off1_weight_off3", c_norm, "layer_norm", Z(1024, 8), K4, BF16, x_off=1, w_off=3)
add("layer_norm_bf16_x_transposed", c_norm, "layer_norm", Z(1024, 8), K4, BF16, layout="t", ib=True)
add("rms_norm_bf16_x_rowstride4100", c_norm, "rms_norm", Z(1024, 8), K4, BF16, layout="pad4")
add("add_layer_norm_bf16_residual_expanded_x_t", c_norm, "add_layer_norm", Z(512, 8), Z(2048, 40), BF16,
    layout="t", res=True, res_layout="expand")
add("layer_norm_bf16_8192^2_determinism", c_norm, "layer_norm", Z(8192, 16), Z(8192, 64), BF16, determinism=True)

# --- softmax ---
for width, M in ((1, 4099), (3, 4099), (4097, 1031), (32768, 64), (65537, 67)):
    add(f"softmax_bf16_w{width}_fwd_bwd", c_softmax, Z(M, 5), Z(width, min(width, 300)), BF16)
add("log_softmax_fp16_w65537_fwd_bwd_determinism", c_softmax, Z(67, 5), Z(65537, 300), FP16, log=True,
    determinism=True)
add("log_softmax_bf16_w4097_dy_transposed", c_softmax, Z(1031, 5), Z(4097, 100), BF16, log=True, do_mode="t")
add("softmax_fp32_w65537_dy_expanded", c_softmax, Z(33, 5), Z(65537, 300), FP32, do_mode="expand")
add("softmax_bf16_w65537_specials_inf_nan", c_softmax, Z(16, 6), Z(65537, 300), BF16, specials=True)
add("softmax_fp16_w4097_specials_inf_nan", c_softmax, Z(16, 6), Z(4097, 100), FP16, specials=True)
add("log_softmax_bf16_w65537_specials", c_softmax, Z(16, 6), Z(65537, 300), BF16, log=True, specials=True)
add("softmax_bf16_dim0_4097x96", c_softmax, 96, Z(4097, 100), BF16, dim=0)
add("softmax_bf16_x_transposed_w4097", c_softmax, Z(1031, 5), Z(4097, 100), BF16, layout="t")
add("softmax_bf16_x_off1_w65537", c_softmax, Z(67, 5), Z(65537, 300), BF16, x_off=1)


# --- odd sizes ---
add("linear_bf16_gelu_M1", c_gemm_fwd, 1, K4, K4, BF16, "gelu", api="linear")
add("gemm_bf16_gelu_N1_257x4099", c_gemm_fwd, 257, 1, Z(4099, 67), BF16, "gelu")
add("gemm_bf16_gelu_K1_127x257", c_gemm_fwd, 127, 257, 1, BF16, "gelu")
add("gemm_fp16_silu_primes_127x4099x257_residual", c_gemm_fwd, 127, Z(4099, 67), 257, FP16, "silu", res="contig")
add("gemm_bf16_relu_primes_4099x127x257", c_gemm_fwd, Z(4099, 67), 127, 257, BF16, "relu")
add("linear_bf16_zero_sizes_fwd_bwd", c_gemm_zero, BF16)
add("attn_bf16_S1_causal", c_attn, 1, 4, 4, 1, 1, 128, BF16, True)
add("attn_bf16_decode_sq1_skv4099_gqa8", c_attn, 2, Z(16, 8), 2, 1, Z(4099, 67), 128, BF16, False)
add("attn_fp16_causal_gqa4_S257_d64", c_attn, 2, 8, 2, 257, 257, 64, FP16, True)
add("attn_bf16_causal_sq1000_skv300_mqa", c_attn, 1, 4, 1, Z(1000, 50), Z(300, 20), 128, BF16, True)
add("attn_bf16_causal_sq300_skv1000_d96", c_attn, 1, 4, 4, Z(300, 20), Z(1000, 50), 96, BF16, True)
add("attn_fp16_causal_d256_S513", c_attn, 1, 2, 2, Z(513, 33), Z(513, 33), 256, FP16, True)
add("attn_bf16_d32_gqa_bshd_S777", c_attn, 2, 8, 2, Z(777, 33), Z(777, 33), 32, BF16, False, layout="bshd")
add("attn_bf16_skv0_zeros", c_attn, 1, 4, 2, 5, 0, 64, BF16, False)
add("attn_bf16_sq0_empty", c_attn, 1, 4, 2, 0, 7, 64, BF16, True)


if __name__ == "__main__":
    if not SMOKE and not LIST_ONLY:
        if not torch.cuda.is_available():
            print("no CUDA device: run this on the GPU machine (or AUDIT_CPU_SMOKE=1 for a CPU logic check)")
            sys.exit(2)
        emit(f"# budget {BUDGET:.0f}s (AUDIT_BUDGET_S), per-case watchdog {CASE_TIMEOUT:.0f}s (AUDIT_CASE_TIMEOUT_S)")
        cap = torch.cuda.get_device_capability()
        emit(f"# torch {torch.__version__} triton {__import__('triton').__version__} "
             f"gpu {torch.cuda.get_device_name()} sm_{cap[0]}{cap[1]} python {sys.version.split()[0]}")
        if cap != (9, 0):
            emit("# WARNING: not sm_90: the TMA / Gluon routes are not taken; route warnings expected")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    if not LIST_ONLY:
        _install_route_hooks()
    sys.exit(run_all())
