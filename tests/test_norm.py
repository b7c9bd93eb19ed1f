import itertools

import pytest
import torch

import trifuse
from helpers import assert_close_to_ref, poison
from trifuse.ops.norm import norm_bwd_into, norm_fwd_into
from trifuse.reference.norm import layer_norm_ref, rms_norm_ref

FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
KINDS = ["layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"]


def _rand(shape, device, dtype, scale=1.0, shift=0.0):
    return (torch.randn(shape, device=device) * scale + shift).to(dtype)


def make_inputs(kind, shape, device, dtype, *, weight=True, bias=True, input_bias=True, w_dtype=None):
    n = shape[-1]
    w_dtype = w_dtype or dtype
    is_rms = "rms" in kind
    return {
        "x": _rand(shape, device, dtype, 2.0, 0.5),
        "weight": _rand(n, device, w_dtype, 0.5, 1.0) if weight else None,
        "bias": _rand(n, device, w_dtype, 0.5) if bias and not is_rms else None,
        "input_bias": _rand(n, device, dtype, 0.5) if input_bias else None,
        "residual": _rand(shape, device, dtype, 1.0) if kind.startswith("add") else None,
    }


def call_ours(kind, t):
    kw = {"input_bias": t["input_bias"]}
    fn = getattr(trifuse, kind)
    if kind == "layer_norm":
        return fn(t["x"], t["weight"], t["bias"], **kw)
    if kind == "rms_norm":
        return fn(t["x"], t["weight"], **kw)
    if kind == "add_layer_norm":
        return fn(t["x"], t["residual"], t["weight"], t["bias"], **kw)
    return fn(t["x"], t["residual"], t["weight"], **kw)


def call_ref(kind, t, dtype):
    kw = {"input_bias": t["input_bias"], "residual": t["residual"], "dtype": dtype}
    if "rms" in kind:
        return rms_norm_ref(t["x"], t["weight"], 1e-6, **kw)
    return layer_norm_ref(t["x"], t["weight"], t["bias"], 1e-5, **kw)


def leaves(t, dtype=None):
    return {k: (v.to(dtype) if dtype else v).detach().clone().requires_grad_() if v is not None else None
            for k, v in t.items()}


def check(kind, t, floor=None, grads=True):
    """Forward and every gradient against fp64, with a budget of 2x torch's own same-dtype error."""
    floor = floor or FLOOR[t["x"].dtype]
    names = [k for k, v in t.items() if v is not None]
    runs = []
    for dtype in (None, None, torch.float64):  # ours, torch in the same dtype, fp64 reference
        lv = leaves(t, dtype)
        out = call_ours(kind, lv) if not runs else call_ref(kind, lv, dtype)
        runs.append((lv, out if isinstance(out, tuple) else (out,)))
    (ours_in, ours), (torch_in, theirs), (ref_in, ref) = runs
    for i, (o, r, th) in enumerate(zip(ours, ref, theirs)):
        assert o.dtype == t["x"].dtype
        assert_close_to_ref(o, r, th, floor=floor, what=f"{kind} output {i}")
    if not grads:
        return
    douts = [torch.randn_like(o) for o in ours]
    g_ours = torch.autograd.grad(ours, [ours_in[k] for k in names], douts)
    g_torch = torch.autograd.grad(theirs, [torch_in[k] for k in names], douts)
    g_ref = torch.autograd.grad(ref, [ref_in[k] for k in names], [d.double() for d in douts])
    for k, go, gt, gr in zip(names, g_ours, g_torch, g_ref):
        assert go.dtype == t[k].dtype, f"d{k} dtype"
        assert_close_to_ref(go, gr, gt, floor=floor, what=f"{kind} d{k}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n", [1, 127, 128, 1000, 4097])
@pytest.mark.parametrize("m", [1, 37])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_all_options(device, kind, m, n, dtype):
    check(kind, make_inputs(kind, (m, n), device, dtype))


@pytest.mark.parametrize("weight,bias,input_bias", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("kind", KINDS)
def test_optional_arguments(device, kind, weight, bias, input_bias):
    if "rms" in kind and bias:
        pytest.skip("RMSNorm has no bias")
    check(kind, make_inputs(kind, (19, 200), device, torch.float32, weight=weight, bias=bias,
                            input_bias=input_bias))


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_weights_with_fp16_input(device, kind):
    check(kind, make_inputs(kind, (23, 300), device, torch.float16, w_dtype=torch.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_leading_batch_dims(device, kind):
    check(kind, make_inputs(kind, (2, 3, 5, 64), device, torch.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_inputs(device, kind):
    t = make_inputs(kind, (40, 150), device, torch.float32)
    base = torch.randn(150, 80, device=device) * 2
    t["x"] = base.t()[:40]  # column stride 80: a strided view, no copy
    if t["residual"] is not None:
        t["residual"] = torch.randn(40, 300, device=device)[:, ::2]
    check(kind, t)
    t["x"] = torch.randn(4, 40, 3, 150, device=device)[:, :, 1]  # row stride 450, 3-D
    if t["residual"] is not None:
        t["residual"] = torch.randn(4, 40, 150, device=device)
    check(kind, t)


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
    import trifuse.ops.norm as on

    monkeypatch.setattr(on, "BWD_PREFETCH", prefetch)
    monkeypatch.setattr(on, "BWD_KEEP_VECTOR_ELEMS", keep_elems)
    monkeypatch.setattr(on, "BWD_PAIRED_SUMS", paired)
    monkeypatch.setattr(on, "INTERPRET_PROGRAMS", 3)
    check(kind, make_inputs(kind, (41, 96), device, torch.float32, weight=True, bias=True, input_bias=True))


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


def test_residual_in_another_dtype(device):
    x = torch.randn(6, 40, device=device).half().requires_grad_()
    r = torch.randn(6, 40, device=device, requires_grad=True)  # fp32 residual stream
    y, h = trifuse.add_layer_norm(x, r)
    assert h.dtype == torch.float16 and y.dtype == torch.float16
    torch.testing.assert_close(h, (x.float() + r).half())
    gx, gr = torch.autograd.grad(y.float().sum() + h.float().sum(), [x, r])
    assert gx.dtype == torch.float16 and gr.dtype == torch.float32
    torch.testing.assert_close(gr.half(), gx)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (2, 0, 3), (0,)])
@pytest.mark.parametrize("kind", KINDS)
def test_empty_inputs(device, kind, shape):
    t = leaves(make_inputs(kind, shape, device, torch.float32))
    out = call_ours(kind, t)
    out = out if isinstance(out, tuple) else (out,)
    for o in out:
        assert o.shape == torch.Size(shape)
    names = [k for k, v in t.items() if v is not None]
    grads = torch.autograd.grad(out, [t[k] for k in names], [torch.ones_like(o) for o in out])
    for k, g in zip(names, grads):
        assert g.shape == t[k].shape
        if k in ("weight", "bias", "input_bias"):
            assert torch.count_nonzero(g) == 0 if shape[-1] else g.numel() == 0


def test_rms_norm_eps_none_uses_finfo(device):
    x = torch.randn(4, 16, device=device) * 1e-4
    torch.testing.assert_close(trifuse.rms_norm(x, eps=None), torch.nn.functional.rms_norm(x, (16,), eps=None))


@pytest.mark.parametrize("elementwise_affine,bias", [(True, True), (True, False), (False, False)])
def test_nn_layer_norm_drop_in(device, elementwise_affine, bias):
    ours = trifuse.nn.LayerNorm(48, eps=1e-4, elementwise_affine=elementwise_affine, bias=bias, device=device)
    theirs = torch.nn.LayerNorm((48,), eps=1e-4, elementwise_affine=elementwise_affine, bias=bias, device=device)
    assert isinstance(ours, torch.nn.LayerNorm)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(3, 7, 48, device=device, requires_grad=True)
    torch.testing.assert_close(ours(x), theirs(x))
    dy = torch.randn(3, 7, 48, device=device)
    wrt = [x, *ours.parameters()]
    g_ours = torch.autograd.grad(ours(x), wrt, dy)
    g_theirs = torch.autograd.grad(theirs(x), [x, *theirs.parameters()], dy)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("eps", [None, 1e-5])
def test_nn_rms_norm_drop_in(device, eps):
    ours = trifuse.nn.RMSNorm([2, 24], eps=eps, device=device)
    theirs = torch.nn.RMSNorm([2, 24], eps=eps, device=device)
    with torch.no_grad():
        theirs.weight.normal_()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 24, device=device)
    torch.testing.assert_close(ours(x), theirs(x))
    assert isinstance(ours, torch.nn.RMSNorm)
    with pytest.raises(ValueError, match="trailing dims"):
        ours(torch.randn(5, 24, 2, device=device))
    m = trifuse.nn.RMSNorm(24, elementwise_affine=False, dtype=torch.float16, device=device)
    assert m(torch.randn(3, 24, device=device).half()).dtype == torch.float16


def test_bad_input(device):
    x = torch.randn(4, 8, device=device)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\), got \(7,\)"):
        trifuse.layer_norm(x, torch.ones(7, device=device))
    with pytest.raises(ValueError, match="bias"):
        trifuse.layer_norm(x, None, torch.ones(4, 2, device=device))
    with pytest.raises(ValueError, match="input_bias"):
        trifuse.rms_norm(x, input_bias=torch.ones(9, device=device))
    with pytest.raises(ValueError, match=r"residual must have shape \(4, 8\)"):
        trifuse.add_rms_norm(x, torch.ones(4, 9, device=device))
    with pytest.raises(TypeError, match="dtype"):
        trifuse.layer_norm(torch.arange(8, device=device))
    with pytest.raises(TypeError, match="dtype"):
        trifuse.rms_norm(x, torch.ones(8, dtype=torch.int32, device=device))
    with pytest.raises(TypeError, match="dtype"):
        trifuse.add_layer_norm(x, x.double())
    with pytest.raises(TypeError, match="torch.Tensor"):
        trifuse.add_layer_norm(x, [1.0])
    with pytest.raises(TypeError, match="eps"):
        trifuse.layer_norm(x, eps="1e-5")
    with pytest.raises(ValueError, match="eps"):
        trifuse.layer_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match="at least 1 dim"):
        trifuse.layer_norm(torch.tensor(1.0, device=device))
    other = torch.device("meta")
    with pytest.raises(ValueError, match="device"):
        trifuse.layer_norm(x, torch.ones(8, device=other))


def test_opcheck(device):
    # The fake-tensor and compile checks need a GPU; test_opcheck_full_gpu runs them there.
    x = torch.randn(7, 33, device=device, requires_grad=True)
    w, b, ib = (torch.randn(33, device=device, requires_grad=True) for _ in range(3))
    r = torch.randn(7, 33, device=device, requires_grad=True)
    utils = ("test_schema", "test_autograd_registration")
    for args in [(x, w, b, ib, None, 1e-5, False), (x, w, None, None, r, 1e-6, True), (x, None, None, None, None, 1e-5, False)]:
        torch.library.opcheck(torch.ops.trifuse.norm_fwd.default, args, test_utils=utils)
    y, _h, mean, rstd = torch.ops.trifuse.norm_fwd(x.detach(), w.detach(), b.detach(), ib.detach(), None, 1e-5, False)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.trifuse.norm_bwd.default,
                          (dy, None, x.detach(), ib.detach(), w.detach(), b.detach(), mean, rstd, False, True),
                          test_utils=("test_schema",))


# ---- GPU only -------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_opcheck_full_gpu(device):
    x = torch.randn(64, 1000, device=device, requires_grad=True)
    w, b, ib = (torch.randn(1000, device=device, requires_grad=True) for _ in range(3))
    r = torch.randn(64, 1000, device=device, requires_grad=True)
    for args in [(x, w, b, ib, None, 1e-5, False), (x, w, None, ib, r, 1e-6, True),
                 (x, None, None, None, r, 1e-5, False)]:
        torch.library.opcheck(torch.ops.trifuse.norm_fwd.default, args)
    y, _h, mean, rstd = torch.ops.trifuse.norm_fwd(x.detach(), w.detach(), b.detach(), ib.detach(), None, 1e-5, False)
    torch.library.opcheck(torch.ops.trifuse.norm_bwd.default,
                          (torch.randn_like(y), None, x.detach(), ib.detach(), w.detach(), b.detach(), mean, rstd,
                           False, True))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(4096, 4096), (1024, 65536), (8192, 512), (3, 17, 2048), (64, 32769)])
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_large_shapes_gpu(device, kind, shape):
    check(kind, make_inputs(kind, shape, device, torch.bfloat16, w_dtype=torch.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_same_dtype_weights_gpu(device, kind):
    check(kind, make_inputs(kind, (512, 8192), device, torch.bfloat16))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_torch_compile_fullgraph(device, kind):
    t = leaves(make_inputs(kind, (256, 1024), device, torch.float32))
    names = [k for k, v in t.items() if v is not None]

    def f(**kw):
        out = call_ours(kind, kw)
        out = out if isinstance(out, tuple) else (out,)
        return sum((o * 1.5).sum() for o in out)

    compiled = torch.compile(f, fullgraph=True)
    g = torch.autograd.grad(compiled(**t), [t[k] for k in names])
    ref_in = leaves(t)
    g_ref = torch.autograd.grad(f(**ref_in), [ref_in[k] for k in names])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_bf16_deterministic_large_gpu(device):
    t = leaves(make_inputs("add_layer_norm", (16384, 1024), device, torch.bfloat16))
    names = [k for k, v in t.items() if v is not None]
    y, h = call_ours("add_layer_norm", t)
    d = (torch.randn_like(y), torch.randn_like(h))
    g1 = torch.autograd.grad((y, h), [t[k] for k in names], d, retain_graph=True)
    g2 = torch.autograd.grad((y, h), [t[k] for k in names], d)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.gpu
def test_cpu_tensor_on_gpu_path_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        trifuse.layer_norm(torch.randn(4, 4))
    with pytest.raises(ValueError, match="one device"):
        trifuse.layer_norm(torch.randn(4, 4, device="cuda"), torch.ones(4))
