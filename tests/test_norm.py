"""trifuse layer_norm / rms_norm / add_*: forward and gradients against fp64, options, layouts, errors,
nn drop-ins, opcheck and torch.compile. Backward-kernel paths: test_norm_backward.py."""
import itertools

import pytest
import torch

import trifuse
import trifuse.ops.norm_configs as on
from norm_cases import KINDS, call_ours, check, leaves, make_inputs
from trifuse.kernels import norm as kf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n", [1, 127, 128, 1000, 4097])
@pytest.mark.parametrize("m", [1, 37])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_all_options(device, kind, m, n, dtype):
    check(kind, make_inputs(kind, (m, n), device, dtype))


@pytest.mark.parametrize("weight,bias", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("early", [False, True])
def test_layer_norm_reads_parameters_early_or_late(device, monkeypatch, early, weight, bias):
    """One-row programs of a small LayerNorm read weight and bias before x (ops.norm_configs.FWD_EARLY_PARAMS) or
    after the reductions: both orders give the same result, wide odd rows, with and without each vector."""
    monkeypatch.setattr(on, "FWD_EARLY_PARAMS", early)
    assert on.fwd_config(5, 4001, False, False).early_params == early
    assert not on.fwd_config(5, 4001, True, False).early_params  # RMSNorm keeps the late read
    assert not on.fwd_config(5, 4097, False, False).early_params  # 8192-wide tiles keep it too
    check("layer_norm", make_inputs("layer_norm", (5, 4001), device, torch.float16, weight=weight, bias=bias))


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("weight,bias", [(True, True), (False, True), (True, False)])
def test_fp32_rows_to_8192_read_parameters_early(device, kind, weight, bias):
    """fp32 rows of 4097-8192 take 8 warps (RMSNorm, of any dtype: 4) with weight and bias read before x
    (ops.norm_configs.FWD_FP32_EARLY_N), except with an input bias or residual, and 16-bit LayerNorm rows keep the
    late read; results match either way."""
    cfg = on.fwd_config(3, 5003, kind == "rms_norm", False, 4)
    assert (cfg.early_params, cfg.num_warps) == (True, 4 if kind == "rms_norm" else 8)
    assert not on.fwd_config(3, 5003, False, False, 4, has_input_bias=True).early_params
    assert not on.fwd_config(3, 5003, False, True, 4).early_params
    assert not on.fwd_config(3, 5003, False, False, 2).early_params
    cfg16 = on.fwd_config(3, 5003, True, False, 2)
    assert (cfg16.early_params, cfg16.num_warps) == (True, 4)
    assert not on.fwd_config(3, 4096, True, False, 4).early_params  # RMSNorm's 4096-wide rows: late
    check(kind, make_inputs(kind, (3, 5003), device, torch.float32, weight=weight, bias=bias, input_bias=False))
    if kind == "rms_norm":  # the 16-bit rows of the same rule
        check(kind, make_inputs(kind, (3, 5003), device, torch.float16, weight=weight, bias=bias, input_bias=False))


def test_fp32_input_bias_rows_to_8192_take_32_warps_on_small_inputs(device):
    """fp32 LayerNorm rows of 4097-8192 with an input bias take 32 warps up to 2^22 elements
    (ops.norm_configs.FWD_IB_FP32_WARPS); larger inputs, 16-bit data and RMSNorm keep 16. Results match."""
    assert on.fwd_config(512, 8192, False, False, 4, has_input_bias=True).num_warps == 32
    assert on.fwd_config(3, 5003, False, False, 4, has_input_bias=True).num_warps == 32
    assert on.fwd_config(1024, 8192, False, False, 4, has_input_bias=True).num_warps == 16
    assert on.fwd_config(512, 8192, False, False, 2, has_input_bias=True).num_warps == 16
    assert on.fwd_config(512, 8192, True, False, 4, has_input_bias=True).num_warps == 16
    check("layer_norm", make_inputs("layer_norm", (3, 5003), device, torch.float32))


@pytest.mark.parametrize("n", [1, 300, 512, 4097, 9000])
@pytest.mark.parametrize("kind", KINDS)
def test_inference_forward_writes_no_statistics(device, kind, n):
    """Where autograd records nothing the eager path skips mean and rstd (kernels STORE_STATS off, no
    allocation): the output is unchanged, on one-warp, one-row and looped (9000-wide) rows alike."""
    from trifuse.library.norm import norm_fwd

    t = make_inputs(kind, (7, n), device, torch.float32)
    with torch.no_grad():  # the leaves check() makes require grad; no graph is recorded
        check(kind, t, grads=False)
    x, w = t["x"].reshape(-1, n), t["weight"]
    _, _, mean, rstd = norm_fwd(x, w, None, None, None, 1e-5, False)
    assert mean is None and rstd is None
    _, _, mean, rstd = norm_fwd(x.clone().requires_grad_(), w, None, None, None, 1e-5, False)
    x64 = x.double()
    torch.testing.assert_close(mean.double(), x64.mean(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rstd.double(), (x64.var(-1, unbiased=False) + 1e-5).rsqrt(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["add_rms_norm", "add_layer_norm"])
def test_fp32_residual_rows_take_the_unrolled_looped_kernel(device, kind):
    """fp32 rows of 4097-8192 with a residual on small inputs: the looped kernel with per-lane sums, both
    loops unrolled (ops.norm_configs.FWD_LOOPED_RES_FP32_N); a ragged last chunk keeps its masks; 16-bit
    data and larger inputs keep the one-pass kernel. Results and gradients match."""
    launch = on.fwd_launch(512, 8192, True, True, 4, False)
    assert launch.kernel is kf.norm_fwd_looped
    assert (launch.meta["CHUNKS"], launch.meta["EVEN_N"], launch.meta["ACC_LANES"]) == (4, True, True)
    assert not on.fwd_launch(512, 6000, True, True, 4, False).meta["EVEN_N"]
    assert on.fwd_launch(512, 8192, True, True, 2, False).kernel is kf.norm_fwd_rows
    assert on.fwd_launch(8192, 8192, True, True, 4, False).kernel is kf.norm_fwd_rows
    assert on.fwd_launch(512, 4096, True, True, 4, False).kernel is kf.norm_fwd_rows
    check(kind, make_inputs(kind, (3, 8192), device, torch.float32))
    check(kind, make_inputs(kind, (2, 6001), device, torch.float32, input_bias=False))


@pytest.mark.parametrize("shape", [(64, 512), (63, 512), (8, 4096), (5, 1000)])
def test_even_tiles_drop_their_masks(device, shape):
    """Tiles the shape fills exactly build without row / column masks (EVEN_M, EVEN_N); ragged ones keep
    them, and both give the same results."""
    m, n = shape
    meta = on.fwd_launch(m, n, True, False, 2, False).meta
    assert meta["EVEN_N"] == (n in (512, 4096))
    assert meta["EVEN_M"] == (m % meta["BLOCK_M"] == 0)
    for kind in ("rms_norm", "layer_norm"):
        check(kind, make_inputs(kind, shape, device, torch.float16), grads=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_narrow_rows_one_warp_rule(device, dtype):
    """Rows of 257-512 without a residual: two rows a program on one warp, parameters read with x
    (ops.norm_configs.FWD_ONE_WARP_N); with a residual one row a program (FWD_ONE_WARP_RES_TILE_ELEMS);
    1024-wide rows keep their tiles. Results match on a ragged last tile and an odd width, with and
    without each vector."""
    for n, elem in ((512, 2), (300, 4), (257, 2)):
        cfg = on.fwd_config(8192, n, True, False, elem)
        assert (cfg.block_m, cfg.block_n, cfg.num_warps, cfg.early_params) == (2, 512, 1, True)
    assert on.fwd_config(8192, 1024, True, False, 2).num_warps == 2
    assert on.fwd_config(8192, 256, True, False, 2).block_n == 256
    res = on.fwd_config(8192, 300, True, True, 2)
    assert (res.block_m, res.block_n, res.num_warps, res.early_params) == (1, 512, 1, True)
    assert on.fwd_config(8192, 1024, True, True, 2).num_warps != 1
    for kind in ("layer_norm", "rms_norm", "add_rms_norm", "add_layer_norm"):
        check(kind, make_inputs(kind, (37, 300), device, dtype))
        check(kind, make_inputs(kind, (5, 512), device, dtype, bias=False, input_bias=False))


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rms_norm_eps_none_uses_the_compute_types_epsilon(device, dtype):
    """eps=None is the machine epsilon of the type torch computes in: fp32 for 16-bit x (fp16's own, ~1e-3,
    would move rows of mean square ~1e-6 by a factor of ~2). The functional op, add_rms_norm and the nn
    drop-in all resolve it so."""
    x = (torch.randn(4, 64, device=device) * 1e-3).to(dtype)
    ref = torch.nn.functional.rms_norm(x, (64,), eps=None)
    torch.testing.assert_close(trifuse.rms_norm(x, eps=None), ref)
    torch.testing.assert_close(trifuse.nn.RMSNorm(64, device=device, dtype=dtype)(x), ref)
    y, _ = trifuse.add_rms_norm(x, torch.zeros_like(x), None, eps=None)
    torch.testing.assert_close(y, ref)


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


def test_second_derivative_is_a_clear_error(device):
    x = torch.randn(4, 8, device=device, requires_grad=True)
    (gx,) = torch.autograd.grad((trifuse.layer_norm(x) * torch.randn(4, 8, device=device)).sum(), x,
                                create_graph=True)
    with pytest.raises(RuntimeError, match="backward is not differentiable"):
        torch.autograd.grad(gx.pow(2).sum(), x)


def test_numpy_scalar_eps_is_accepted(device):
    np = pytest.importorskip("numpy")
    x = torch.randn(4, 8, device=device)
    torch.testing.assert_close(trifuse.layer_norm(x, eps=np.float32(1e-5)), trifuse.layer_norm(x, eps=1e-5))
    torch.testing.assert_close(trifuse.rms_norm(x, eps=np.float16(1e-3)), trifuse.rms_norm(x, eps=float(np.float16(1e-3))))


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
@pytest.mark.parametrize("shape", [(4096, 4096), (1024, 65536), (8192, 512), (3, 17, 2048), (64, 32769),
                                   (64, 12288), (65, 16384)])
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_large_shapes_gpu(device, kind, shape):
    check(kind, make_inputs(kind, shape, device, torch.bfloat16, w_dtype=torch.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(64, 12288), (33, 40000)])
@pytest.mark.parametrize("kind", KINDS)
def test_fp32_wide_rows_gpu(device, kind, shape):
    # The looped backward's rows a program scale down for fp32, so its pipelined stages fit shared memory.
    check(kind, make_inputs(kind, shape, device, torch.float32))


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
def test_cpu_tensor_on_gpu_path_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        trifuse.layer_norm(torch.randn(4, 4))
    with pytest.raises(ValueError, match="one device"):
        trifuse.layer_norm(torch.randn(4, 4, device="cuda"), torch.ones(4))
