"""The norm backward kernels' paths: the streamed wide-row kernel, the persistent grid, prefetch /
re-read / paired-sum variants, determinism, and gradients through h alone."""
import pytest
import torch

import trifuse
from helpers import assert_close_to_ref, poison
from norm_cases import KINDS, call_ours, check, leaves, make_inputs
from trifuse.ops.norm import norm_bwd_into, norm_fwd_into
from trifuse.reference.norm import layer_norm_ref, rms_norm_ref


@pytest.mark.parametrize("is_rms", [False, True])
@pytest.mark.parametrize("n", [257, 1000])
@pytest.mark.parametrize("residual", [False, True])
def test_looped_path_forward_and_backward(device, is_rms, n, residual):
    # Force the wide-row (streamed) kernels at small N so the interpreter can exercise them.
    m = 13
    x = torch.randn(m, n, device=device) * 2 + 3  # an offset mean: the stats pass must not cancel
    w, b, ib = (torch.randn(n, device=device) for _ in range(3))
    res = torch.randn(m, n, device=device) if residual else None
    b_arg = None if is_rms else b
    y, h = poison(torch.empty_like(x)), poison(torch.empty_like(x)) if residual else None
    mean, rstd = poison(torch.empty(m, device=device)), poison(torch.empty(m, device=device))
    norm_fwd_into(x, w, b_arg, ib, res, 1e-5, is_rms, y, h, None if is_rms else mean, rstd, max_fused_n=256)
    ref_fn = rms_norm_ref if is_rms else layer_norm_ref
    args = (w,) if is_rms else (w, b)
    xd = x.double().requires_grad_()
    wd, bd, ibd = (t.double().requires_grad_() for t in (w, b, ib))
    resd = res.double().requires_grad_() if residual else None
    ref = ref_fn(xd, *((wd,) if is_rms else (wd, bd)), 1e-5, input_bias=ibd, residual=resd)
    ref_y, ref_h = ref if residual else (ref, None)
    torch_y = ref_fn(x, *args, 1e-5, input_bias=ib, residual=res)
    torch_y = torch_y[0] if residual else torch_y
    assert_close_to_ref(y, ref_y, torch_y, floor=1e-5)
    if residual:
        assert_close_to_ref(h, ref_h, floor=1e-6)
    # Backward: src is h (with a residual) or x with input_bias recomputed.
    dy = torch.randn_like(x)
    dho = torch.randn_like(x) if residual else None
    dx = poison(torch.empty_like(x))
    dw, db, dib = (poison(torch.empty(n, device=device)) for _ in range(3))
    src, ib_arg = (h, None) if residual else (x, ib)
    norm_bwd_into(dy, dho, src, ib_arg, w, None if is_rms else mean, rstd, is_rms, dx, dw,
                  None if is_rms else db, dib, max_fused_n=256)
    outs = (ref_y, ref_h) if residual else (ref_y,)
    douts = (dy.double(), dho.double()) if residual else (dy.double(),)
    wrt = [xd, wd, ibd] + ([] if is_rms else [bd])
    g = torch.autograd.grad(outs, wrt, douts)
    mine = [dx, dw, dib] + ([] if is_rms else [db])
    for name, got, want in zip(["dx", "dw", "dib", "db"], mine, g):
        assert_close_to_ref(got, want, floor=2e-5 * max(1.0, n / 256), what=name)


def test_persistent_grid_covers_every_row(device):
    # Fewer programs than tiles: each program must stride over its tiles and sum them all.
    x = torch.randn(50, 64, device=device)
    w = torch.randn(64, device=device)
    rstd = (x.var(-1, unbiased=False) + 1e-5).rsqrt()
    mean = x.mean(-1)
    dy = torch.randn_like(x)
    outs = []
    for programs in (1, 3, 7):
        dx = poison(torch.empty_like(x))
        dw, db = (poison(torch.empty(64, device=device)) for _ in range(2))
        norm_bwd_into(dy, None, x, None, w, mean, rstd, False, dx, dw, db, num_programs=programs)
        outs.append((dx, dw, db))
    xh = (x - mean[:, None]) * rstd[:, None]
    torch.testing.assert_close(outs[0][1], (dy * xh).sum(0), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(outs[0][2], dy.sum(0), atol=1e-4, rtol=1e-5)
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("prefetch,keep_elems,paired", [(False, 1 << 30, False), (True, 1 << 30, False),
                                                         (True, 0, True), (False, 0, True)])
@pytest.mark.parametrize("kind", KINDS)
def test_backward_variants(device, monkeypatch, kind, prefetch, keep_elems, paired):
    # The backward's tile prefetch, its per-tile re-read of weight / input bias (wide rows) and its
    # paired row sums (LayerNorm) must give the same gradients as the plain loop; a persistent grid of
    # 3 programs strides over tiles.
    import trifuse.ops.norm_bwd_configs as ob

    monkeypatch.setattr(ob, "BWD_PREFETCH", prefetch)
    monkeypatch.setattr(ob, "BWD_KEEP_VECTOR_ELEMS", keep_elems)
    monkeypatch.setattr(ob, "BWD_RELOAD_MIN_TILES_PER_PROGRAM", 0)  # re-read whenever past the budget
    monkeypatch.setattr(ob, "BWD_PAIRED_SUMS", paired)
    monkeypatch.setattr(ob, "INTERPRET_PROGRAMS", 3)
    check(kind, make_inputs(kind, (41, 96), device, torch.float32, weight=True, bias=True, input_bias=True))


@pytest.mark.parametrize("acc_rows_max_n", [0, 1 << 30])
@pytest.mark.parametrize("kind", KINDS)
def test_backward_column_sums_per_tile_or_after_loop(device, monkeypatch, kind, acc_rows_max_n):
    # The column sums accumulated per tile (reduced over the tile's rows each step) or as whole tiles
    # reduced once after the loop (ops.norm_bwd_configs.BWD_ACC_ROWS_MAX_N): same gradients, on narrow rows of several
    # tiles a program and on a row wider than the default's limit, a ragged last tile in both.
    import trifuse.ops.norm_bwd_configs as ob

    monkeypatch.setattr(ob, "BWD_ACC_ROWS_MAX_N", acc_rows_max_n)
    monkeypatch.setattr(ob, "INTERPRET_PROGRAMS", 3)
    for shape in ((45, 96), (7, 1500)):
        check(kind, make_inputs(kind, shape, device, torch.float32, weight=True, bias=True, input_bias=True))


def test_backward_plan():
    # The register policy the sweeps chose: at N = 4096, 16-bit, LayerNorm keeps its three vectors and
    # bias+LN its five with one program per SM (two rows a tile); fp32 past the budget re-reads them; few
    # 16-bit tiles a program keep them.
    import trifuse.ops.norm_bwd_configs as ob

    cuda = torch.device("cuda", 0)
    sms = ob.device_props(0)[1] if torch.cuda.is_available() and not ob.INTERPRET else None
    if sms is None:
        pytest.skip("grid sizes need a GPU's SM count")
    ln = ob.bwd_plan(16384, 4096, 3, 2, cuda)
    assert (ln.rows.block_m, ln.programs, ln.reload_vecs) == (2, sms, False)
    bias_ln = ob.bwd_plan(16384, 4096, 5, 2, cuda)
    assert (bias_ln.rows.block_m, bias_ln.programs, bias_ln.reload_vecs) == (2, sms, False)
    assert ob.bwd_plan(16384, 4096, 5, 4, cuda).reload_vecs  # fp32
    assert not ob.bwd_plan(512, 8192, 5, 2, cuda).reload_vecs
    assert ob.bwd_plan(512, 8192, 5, 4, cuda).reload_vecs  # fp32
    assert ob.bwd_plan(8192, 8192, 5, 2, cuda).reload_vecs
    narrow = ob.bwd_plan(8192, 512, 3, 2, cuda)
    assert (narrow.rows.block_m, narrow.programs) == (4, 2 * sms)
    # 16-bit rows of 513-1024: three programs per SM on large inputs only, never in fp32
    assert ob.bwd_plan(16384, 1024, 3, 2, cuda).programs == 3 * sms
    assert ob.bwd_plan(32768, 768, 3, 2, cuda).programs == 3 * sms
    assert ob.bwd_plan(4096, 768, 3, 2, cuda).programs == 2 * sms
    assert ob.bwd_plan(16384, 1024, 3, 4, cuda).programs == 2 * sms
    assert ob.bwd_plan(32768, 512, 3, 2, cuda).programs == 2 * sms


def test_wide_rows_route_to_the_looped_kernels():
    # The H100 A/Bs' policy (ops/norm_bwd_configs.py FUSED_BWD_LN_MAX_N, norm_configs.py FWD_LOOPED_LN_N):
    # LayerNorm past 8192 streams its rows in both directions up to 16384; RMSNorm's backward only where the
    # row fills <= 3/4 of its tile.
    import trifuse.ops.norm_bwd_configs as ob
    import trifuse.ops.norm_configs as on

    assert not ob._looped_bwd_pays(8192, False) and ob._looped_bwd_pays(8193, False)
    assert ob._looped_bwd_pays(12288, True) and not ob._looped_bwd_pays(16384, True)
    assert not ob._looped_bwd_pays(8192, True) and not ob._looped_bwd_pays(13000, True)
    assert on.FWD_LOOPED_LN_N == (ob.FUSED_BWD_LN_MAX_N, ob.MAX_FUSED_N_BWD)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_past_8192_through_the_api(device, kind):
    # 9000 wide: LayerNorm takes the looped kernels forward and backward, RMSNorm the looped backward.
    check(kind, make_inputs(kind, (3, 9000), device, torch.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_backward_is_deterministic(device, kind):
    t = leaves(make_inputs(kind, (67, 300), device, torch.float32))
    names = [k for k, v in t.items() if v is not None]
    out = call_ours(kind, t)
    out = out if isinstance(out, tuple) else (out,)
    douts = [torch.randn_like(o) for o in out]
    g1 = torch.autograd.grad(out, [t[k] for k in names], douts, retain_graph=True)
    g2 = torch.autograd.grad(out, [t[k] for k in names], douts)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_gradient_through_h_only(device):
    # Only the new residual stream is used: y's gradient is absent (zeros).
    x, r = (torch.randn(5, 32, device=device, requires_grad=True) for _ in range(2))
    w = torch.randn(32, device=device, requires_grad=True)
    _, h = trifuse.add_rms_norm(x, r, w)
    dh = torch.randn_like(h)
    gx, gr, gw = torch.autograd.grad(h, [x, r, w], dh, allow_unused=True)
    torch.testing.assert_close(gx, dh)
    torch.testing.assert_close(gr, dh)
    assert gw is None or torch.count_nonzero(gw) == 0


@pytest.mark.parametrize("layer", [False, True])
def test_h_needs_no_graph_when_only_the_weights_do(device, layer):
    """h = x + residual carries no graph when neither x nor the residual requires grad (as torch's sum);
    y's gradients still reach the weights."""
    x, r = torch.randn(5, 32, device=device), torch.randn(5, 32, device=device)
    w = torch.randn(32, device=device, requires_grad=True)
    y, h = trifuse.add_layer_norm(x, r, w) if layer else trifuse.add_rms_norm(x, r, w)
    assert not h.requires_grad and y.requires_grad
    torch.testing.assert_close(h, x + r)
    y.sum().backward()
    ref = w.detach().clone().requires_grad_()
    out = torch.nn.functional.layer_norm(x + r, (32,), ref) if layer else \
        torch.nn.functional.rms_norm(x + r, (32,), ref, eps=1e-6)
    out.sum().backward()
    torch.testing.assert_close(w.grad, ref.grad)


@pytest.mark.gpu
def test_bf16_deterministic_large_gpu(device):
    t = leaves(make_inputs("add_layer_norm", (16384, 1024), device, torch.bfloat16))
    names = [k for k, v in t.items() if v is not None]
    y, h = call_ours("add_layer_norm", t)
    d = (torch.randn_like(y), torch.randn_like(h))
    g1 = torch.autograd.grad((y, h), [t[k] for k in names], d, retain_graph=True)
    g2 = torch.autograd.grad((y, h), [t[k] for k in names], d)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
