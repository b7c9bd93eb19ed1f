"""Error messages on mixed devices, and torch.compile."""
import math

import torch
import torch.nn.functional as F

import trifuse

from .checks import Failure, check_close, grads, leaf64, max_err, rnd, sync
from .config import BF16, DEV, FLOOR, SMOKE
from .references import attn_ref, sdpa


# ----------------------------------------------------------------------------------------------------------
# errors, compile
# ----------------------------------------------------------------------------------------------------------
def c_device_mismatch(notes):
    # the "other" device (smoke mode: the kernels' device is cpu)
    cpu = torch.device("meta" if SMOKE else "cpu")
    cpu_residual = torch.zeros(64, 256, dtype=BF16, device=cpu)
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
        ("gemm(residual cpu)", lambda: trifuse.gemm(x, w.t(), residual=cpu_residual)),
        ("gemm(residual cpu, dropout)",
         lambda: trifuse.gemm(x, w.t(), dropout_p=0.1, seed=1, residual=cpu_residual)),
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
