import pytest
import torch

import trifuse
from helpers import assert_close_to_ref, poison
from trifuse.ops.softmax import softmax_bwd_into, softmax_fwd_into

FNS = {False: (trifuse.softmax, torch.softmax), True: (trifuse.log_softmax, torch.log_softmax)}
FLOOR = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def check_fwd(x, dim, log):
    ours, theirs = FNS[log]
    ref = theirs(x.double(), dim)
    assert_close_to_ref(ours(x, dim), ref, theirs(x, dim), floor=FLOOR[x.dtype])


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n", [1, 2, 127, 128, 1000, 4097])
@pytest.mark.parametrize("m", [1, 37])
def test_forward_matches_torch(device, m, n, dtype, log):
    x = (torch.randn(m, n, device=device) * 4).to(dtype)
    check_fwd(x, -1, log)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("n", [257, 1000, 4097])
def test_looped_path_forward_and_backward(device, n, log):
    # Force the streamed (wide-row) kernels at small N so the interpreter can exercise them.
    x = torch.randn(5, n, device=device) * 4
    y = poison(torch.empty_like(x))
    softmax_fwd_into(x, y, log, max_fused_n=128)
    theirs = torch.log_softmax if log else torch.softmax
    assert_close_to_ref(y, theirs(x.double(), -1), theirs(x, -1), floor=1e-6)
    dy = torch.randn_like(x)
    dx = poison(torch.empty_like(x))
    softmax_bwd_into(y, dy, dx, log, max_fused_n=128)
    xd = x.double().requires_grad_()
    (gref,) = torch.autograd.grad(theirs(xd, -1), xd, dy.double())
    xt = x.clone().requires_grad_()
    (g_torch,) = torch.autograd.grad(theirs(xt, -1), xt, dy)
    assert_close_to_ref(dx, gref, g_torch, floor=1e-6)


def test_one_pass_writes_every_element(device):
    x = torch.randn(37, 300, device=device)
    y = poison(torch.empty_like(x))
    softmax_fwd_into(x, y, False)
    assert not torch.isnan(y).any()


@pytest.mark.parametrize("shape,dim", [((3, 5, 7), 0), ((3, 5, 7), 1), ((3, 5, 7), -1),
                                       ((2, 3, 4, 5), 2), ((6,), 0)])
@pytest.mark.parametrize("log", [False, True])
def test_any_rank_any_dim(device, shape, dim, log):
    check_fwd(torch.randn(shape, device=device) * 3, dim, log)


@pytest.mark.parametrize("log", [False, True])
def test_result_is_laid_out_as_torchs(device, log):
    """Over a dim other than the last the result is contiguous, as torch's, so .view() works on it."""
    x = torch.randn(3, 4, 5, device=device)
    fn, ref = (trifuse.log_softmax, torch.log_softmax) if log else (trifuse.softmax, torch.softmax)
    for dim in range(3):
        y = fn(x, dim)
        assert y.is_contiguous() and y.stride() == ref(x, dim).stride()
        torch.testing.assert_close(y.view(-1), ref(x, dim).view(-1))


def test_dtype_argument_casts_first(device):
    x = torch.randn(6, 10, device=device, dtype=torch.float16)
    y = trifuse.softmax(x, -1, dtype=torch.float32)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.softmax(x, -1, dtype=torch.float32))
    torch.testing.assert_close(trifuse.log_softmax(x, 0, dtype=torch.float32),
                               torch.log_softmax(x, 0, dtype=torch.float32))
    with pytest.raises(TypeError, match="dtype"):
        trifuse.softmax(x, -1, dtype="float32")
    with pytest.raises(TypeError):
        trifuse.softmax(x, -1, dtype=torch.int32)


def test_numpy_integer_dim(device):
    np = pytest.importorskip("numpy")
    x = torch.randn(3, 5, 7, device=device)
    for dim in (np.int64(1), np.int32(-1)):
        torch.testing.assert_close(trifuse.softmax(x, dim), torch.softmax(x, int(dim)))
        torch.testing.assert_close(trifuse.log_softmax(x, dim), torch.log_softmax(x, int(dim)))
    with pytest.raises(TypeError, match="dim must be an int"):
        trifuse.softmax(x, np.float64(1.0))


def test_zero_dim_tensor(device):
    x = torch.tensor(2.5, device=device)
    assert trifuse.softmax(x, 0).item() == 1.0
    assert trifuse.log_softmax(x, -1).item() == 0.0


@pytest.mark.parametrize("log", [False, True])
def test_non_contiguous_inputs(device, log):
    base = torch.randn(40, 300, device=device)
    check_fwd(base[:, :257], -1, log)  # row stride 300
    check_fwd(base.t(), 0, log)  # transposed: columns are rows
    check_fwd(base[::3, ::2], -1, log)  # both strides > 1
    check_fwd(base.t(), -1, log)  # column stride 300


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (2, 0, 3), (0,)])
def test_empty_tensors(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    y = trifuse.softmax(x, -1)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_nan_and_inf_behave_like_torch(device):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[-inf, -inf, -inf], [inf, 1, 2], [nan, 1, 2], [-inf, 0, 1], [1e30, -1e30, 0]],
                     device=device)
    for log in (False, True):
        ours, theirs = FNS[log]
        torch.testing.assert_close(ours(x, -1), theirs(x, -1), equal_nan=True)


def test_wide_row_with_leading_minus_inf_chunk(device):
    # The online pass must not turn an all -inf first chunk into NaN.
    x = torch.randn(2, 600, device=device)
    x[:, :300] = float("-inf")
    y = torch.empty_like(x)
    softmax_fwd_into(x, y, False, max_fused_n=128)
    torch.testing.assert_close(y, torch.softmax(x, -1))


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_backward_matches_torch(device, dtype, log):
    ours, theirs = FNS[log]
    x = (torch.randn(9, 333, device=device) * 3).to(dtype)
    dy = torch.randn_like(x)
    xo, xt, xd = (x.clone().requires_grad_() for _ in range(3))
    (g_ours,) = torch.autograd.grad(ours(xo, 1), xo, dy)
    (g_torch,) = torch.autograd.grad(theirs(xt, 1), xt, dy)
    xd = x.double().requires_grad_()
    (g_ref,) = torch.autograd.grad(theirs(xd, 1), xd, dy.double())
    assert_close_to_ref(g_ours, g_ref, g_torch, floor=FLOOR[dtype], what="dx")


def test_backward_non_contiguous_grad(device):
    x = torch.randn(8, 64, device=device, requires_grad=True)
    dy = torch.randn(64, 8, device=device).t()  # non-contiguous upstream gradient
    (g,) = torch.autograd.grad(trifuse.softmax(x, -1), x, dy)
    (g_ref,) = torch.autograd.grad(torch.softmax(x, -1), x, dy)
    torch.testing.assert_close(g, g_ref)


def test_gradcheck_fp64_free_path(device):
    # fp64 is not a supported dtype; gradcheck-like finite differences in fp32 on a tiny input.
    x = torch.randn(3, 5, device=device, requires_grad=True)
    for log in (False, True):
        ours, theirs = FNS[log]
        dy = torch.randn(3, 5, device=device)
        (a,) = torch.autograd.grad(ours(x, -1), x, dy)
        (b,) = torch.autograd.grad(theirs(x, -1), x, dy)
        torch.testing.assert_close(a, b)


def test_properties_rows_sum_to_one_and_shift_invariance(device):
    x = torch.randn(16, 777, device=device) * 10
    y = trifuse.softmax(x)
    torch.testing.assert_close(y.sum(-1), torch.ones(16, device=device))
    torch.testing.assert_close(trifuse.softmax(x + 1000.0), y, atol=1e-6, rtol=1e-4)
    assert (y >= 0).all()
    torch.testing.assert_close(trifuse.log_softmax(x).exp(), y)


def test_nn_modules(device):
    x = torch.randn(4, 6, 10, device=device)
    torch.testing.assert_close(trifuse.nn.Softmax(dim=1)(x), torch.nn.Softmax(dim=1)(x))
    torch.testing.assert_close(trifuse.nn.LogSoftmax(dim=-1)(x), torch.nn.LogSoftmax(dim=-1)(x))
    assert isinstance(trifuse.nn.Softmax(1), torch.nn.Softmax)


@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4), (2, 3, 4, 5)], ids=str)
@pytest.mark.parametrize("cls", ["Softmax", "LogSoftmax"])
def test_nn_modules_without_dim_pick_torchs_dim(device, cls, shape):
    """dim=None: torch's legacy choice (dim 0 for 0-, 1- and 3-D inputs, else 1) and its deprecation warning."""
    x = torch.randn(shape, device=device)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        got = getattr(trifuse.nn, cls)()(x)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        ref = getattr(torch.nn, cls)()(x)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_second_derivative_is_a_clear_error(device, fn):
    x = torch.randn(3, 7, device=device, requires_grad=True)
    (gx,) = torch.autograd.grad((getattr(trifuse, fn)(x) * torch.randn(3, 7, device=device)).sum(), x,
                                create_graph=True)
    with pytest.raises(RuntimeError, match="backward is not differentiable"):
        torch.autograd.grad(gx.pow(2).sum(), x)


@pytest.mark.parametrize("path", ["dispatch_mode", "registered_op"])
def test_second_derivative_through_the_registered_op_is_a_clear_error(device, path):
    """A forward through the dispatcher (under a dispatch mode, or torch.ops.trifuse called directly) records
    the registered op's autograd: its backward's own ops must then raise when differentiated, not drop the
    second-order term (they ran without autograd and gave w a wrong gradient)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(4, 9, device=device, requires_grad=True)
    w = torch.randn(9, device=device, requires_grad=True)
    if path == "dispatch_mode":
        with FlopCounterMode(display=False):
            y = trifuse.softmax(x * w)
    else:
        y = torch.ops.trifuse.softmax_fwd(x * w, False)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="softmax_bwd"):
        (y.sum() + gx.square().sum()).backward()


def test_bad_input(device):
    with pytest.raises(TypeError, match="dtype"):
        trifuse.softmax(torch.arange(10, device=device))
    with pytest.raises(TypeError, match="dtype"):
        trifuse.softmax(torch.randn(3, device=device, dtype=torch.float64))
    with pytest.raises(IndexError, match="rank 2"):
        trifuse.softmax(torch.randn(3, 4, device=device), dim=2)
    with pytest.raises(ValueError, match=r"dim 2 out of range .* \(expected in \[-2, 1\]\)"):
        trifuse.softmax(torch.randn(3, 4, device=device), dim=2)  # also a ValueError, as other bad arguments
    with pytest.raises(IndexError, match="rank 2"):
        trifuse.log_softmax(torch.randn(3, 4, device=device), dim=-3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        trifuse.softmax([1.0, 2.0])


def test_opcheck(device):
    # The fake-tensor and compile checks need a GPU (fake tensors have no data for the interpreter);
    # test_opcheck_full_gpu runs them there.
    x = torch.randn(7, 33, device=device)
    for log in (False, True):
        torch.library.opcheck(torch.ops.trifuse.softmax_fwd.default, (x, log),
                              test_utils=("test_schema", "test_autograd_registration"))
        y = torch.softmax(x, -1)
        torch.library.opcheck(torch.ops.trifuse.softmax_bwd.default, (y, torch.randn_like(y), log),
                              test_utils=("test_schema",))


@pytest.mark.gpu
def test_opcheck_full_gpu(device):
    x = torch.randn(64, 1000, device=device, requires_grad=True)
    for log in (False, True):
        torch.library.opcheck(torch.ops.trifuse.softmax_fwd.default, (x, log))
        y = torch.softmax(x.detach(), -1)
        torch.library.opcheck(torch.ops.trifuse.softmax_bwd.default, (y, torch.randn_like(y), log))


@pytest.mark.gpu
@pytest.mark.parametrize("n", [512, 4096, 32768, 32769, 131072, 262144])
@pytest.mark.parametrize("log", [False, True])
def test_bf16_wide_rows_gpu(device, n, log):
    x = (torch.randn(64, n, device=device) * 3).to(torch.bfloat16)
    check_fwd(x, -1, log)
    ours, theirs = FNS[log]
    dy = torch.randn_like(x)
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    (g_ours,) = torch.autograd.grad(ours(xo, -1), xo, dy)
    (g_torch,) = torch.autograd.grad(theirs(xt, -1), xt, dy)
    xd = x.double().requires_grad_()
    (g_ref,) = torch.autograd.grad(theirs(xd, -1), xd, dy.double())
    assert_close_to_ref(g_ours, g_ref, g_torch, floor=FLOOR[torch.bfloat16], what="dx")


@pytest.mark.gpu
def test_torch_compile_fullgraph(device):
    def f(x):
        return trifuse.log_softmax(trifuse.softmax(x * 2, -1), 0).sum()

    x = torch.randn(128, 1000, device=device, requires_grad=True)
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(x)
    (g,) = torch.autograd.grad(out, x)
    xr = x.detach().clone().requires_grad_()
    ref = torch.log_softmax(torch.softmax(xr * 2, -1), 0).sum()
    (g_ref,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g, g_ref)


@pytest.mark.gpu
def test_cpu_tensor_on_gpu_path_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        trifuse.softmax(torch.randn(4, 4))
