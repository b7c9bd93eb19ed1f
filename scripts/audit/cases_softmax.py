"""Softmax and log_softmax cases."""
import torch

import trifuse

from .checks import check_close, check_equal, grads, leaf64, mk, rnd, sync
from .config import SM_FLOOR


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
