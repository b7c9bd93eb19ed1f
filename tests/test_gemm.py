"""trifuse.gemm / trifuse.linear forward: every epilogue, odd and zero sizes, layouts, dropout, errors.
The kernels' own logic and choice (TMA, warp-specialized) are in test_gemm_kernels.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trifuse
from gemm_cases import ACT_FNS, TAIL_EXACT, check
from helpers import assert_close_to_ref, poison
from trifuse.ops.gemm import ACTIVATIONS, gemm_into
from trifuse.ops.gemm_configs import GemmConfig
from trifuse.reference.dropout import keep_mask


@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation(device, activation, dtype, has_bias):
    a = torch.randn(37, 61, device=device).to(dtype)
    b = (torch.randn(61, 53, device=device) / 8).to(dtype)
    bias = torch.randn(53, device=device).to(dtype) if has_bias else None
    check(a, b, bias, activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_accuracy_over_the_whole_range(device, activation):
    # K = 1 against a 1.0: the pre-activation is x exactly, so the epilogue's own math is what is measured,
    # tails included (sigmoid, tanh and the normal CDF are fast approximations on the GPU), then inf / nan.
    x = torch.linspace(-30.0, 30.0, 6001, device=device)
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30], device=device)])
    out = trifuse.gemm(x[:, None], torch.ones(1, 1, device=device), activation=activation)[:, 0]
    ref = TAIL_EXACT.get(activation, ACT_FNS[activation])(x.double()).float()  # fp32 overflows as out does
    torch.testing.assert_close(out.double(), ref.double(), rtol=1e-5, atol=1e-30)
    special = torch.tensor([float("inf"), float("-inf"), float("nan")], device=device)
    got = trifuse.gemm(special[:, None], torch.ones(1, 1, device=device), activation=activation)[:, 0]
    torch.testing.assert_close(got.double(), ACT_FNS[activation](special.double()), equal_nan=True)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_gradient_at_special_values_as_torch(device, activation):
    # K = 1 against a 1.0: d out / d x is act'(x) itself, at 0, +-inf and nan (relu passes a nan's gradient
    # on, as torch's threshold_backward does).
    x = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 2.5, -2.5], device=device)
    ours = x.clone()[:, None].requires_grad_()
    trifuse.gemm(ours, torch.ones(1, 1, device=device), activation=activation).sum().backward()
    ref = x.double().requires_grad_()
    ACT_FNS[activation](ref).sum().backward()
    torch.testing.assert_close(ours.grad[:, 0].double(), ref.grad, equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mnk", [(1, 64, 32), (127, 129, 1), (37, 61, 53), (3, 5, 7), (128, 128, 128),
                                 (100, 70, 50), (65, 17, 300)])
def test_odd_and_prime_sizes(device, mnk):
    m, n, k = mnk
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    check(a, b, torch.randn(n, device=device), "silu")


@pytest.mark.parametrize("mnk", [(0, 5, 3), (4, 0, 3), (0, 0, 0), (4, 6, 0)])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_zero_sizes(device, mnk, activation):
    m, n, k = mnk
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    bias = torch.randn(n, device=device)
    out = trifuse.gemm(a, b, bias, activation=activation)
    assert out.shape == (m, n)
    if k == 0 and m and n:  # act(bias) broadcast over the rows
        torch.testing.assert_close(out, ACT_FNS[activation](bias).expand(m, n))


def test_k_zero_with_residual(device):
    r = torch.randn(3, 4, device=device)
    out = trifuse.gemm(torch.empty(3, 0, device=device), torch.empty(0, 4, device=device), activation="relu",
                       residual=r)
    torch.testing.assert_close(out, r)


def test_batched_a(device):
    a = torch.randn(2, 3, 17, 24, device=device)
    b = torch.randn(24, 19, device=device)
    check(a, b, torch.randn(19, device=device), "gelu", residual=torch.randn(2, 3, 17, 19, device=device))
    check(torch.randn(24, device=device), b, None, "relu")  # 1-D a: a vector-matrix product


def test_transposed_and_non_contiguous(device):
    base_a = torch.randn(48, 40, device=device)
    base_b = torch.randn(60, 44, device=device)
    bias = torch.randn(44, device=device)
    check(base_a.t(), base_b[:48], bias, "silu")  # a transposed (40, 48)
    check(base_a, base_b[:40].t().contiguous().t(), bias, "silu")  # b stored (N, K), read transposed
    check(base_a[::2, 3:35], base_b[:32, ::2], bias[::2], "relu")  # both strided slices
    check(base_a.t()[::3], base_b[:48, 1:30], None, "gelu_tanh")
    batched = torch.randn(5, 20, 3, device=device).transpose(0, 2)  # (3, 20, 5): not flattenable as a view
    check(batched, torch.randn(5, 7, device=device), None, "silu")


def test_residual_and_out_dtype(device):
    a = torch.randn(33, 40, device=device).half()
    b = (torch.randn(40, 30, device=device) / 6).half()
    bias = torch.randn(30, device=device).half()
    res = torch.randn(30, 33, device=device).t()  # non-contiguous fp32 residual, output fp32
    out = trifuse.gemm(a, b, bias, activation="silu", residual=res, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    ref = F.silu(a.double() @ b.double() + bias.double()) + res.double()
    assert_close_to_ref(out, ref, floor=2e-3)


def test_linear_matches_nn_linear(device):
    lin = torch.nn.Linear(24, 40).to(device)
    x = torch.randn(2, 9, 24, device=device)
    with torch.no_grad():
        for act in ("none", "silu", "leaky_relu"):
            out = trifuse.linear(x, lin.weight, lin.bias, activation=act)
            ref = ACT_FNS[act](F.linear(x.double(), lin.weight.double(), lin.bias.double()))
            assert_close_to_ref(out, ref, ACT_FNS[act](lin(x)), floor=1e-5)


# ---- dropout --------------------------------------------------------------------------------------------

def test_dropout_reproducible_and_scaled(device):
    a, b = torch.randn(64, 32, device=device), torch.randn(32, 96, device=device)
    bias = torch.randn(96, device=device)
    p = 0.3
    y1 = trifuse.gemm(a, b, bias, activation="silu", dropout_p=p, seed=1234)
    y2 = trifuse.gemm(a, b, bias, activation="silu", dropout_p=p, seed=1234)
    y3 = trifuse.gemm(a, b, bias, activation="silu", dropout_p=p, seed=1235)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    full = trifuse.gemm(a, b, bias, activation="silu")
    kept = y1 != 0
    torch.testing.assert_close(y1[kept], full[kept] / (1 - p))
    # Keep rate within 5 sigma of 1 - p.
    n = y1.numel()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * sigma
    # Different tilings give the same mask: it depends on (seed, row, col) only.
    out = torch.empty_like(y1)
    seed_t = torch.tensor([1234], device=device)
    gemm_into(a, b, out, bias=bias, seed=seed_t, activation="silu", dropout_p=p,
              config=GemmConfig("portable", 16, 32, 16, 1))
    assert torch.equal(out == 0, y1 == 0)
    torch.testing.assert_close(out, y1)


@pytest.mark.parametrize("shape", [(64, 32, 200), pytest.param((1024, 512, 1024), marks=pytest.mark.gpu)], ids=str)
def test_dropout_keeps_nan_and_inf_as_torch_does(device, shape):
    """Dropped elements are y * 0, as torch's y * mask / (1 - p): a nan or inf there gives nan, forward and
    backward, not 0 (the larger shape takes the Hopper kernels on an H100)."""
    m, k, n = shape
    a = torch.randn(m, k, device=device, requires_grad=True)
    b = torch.randn(k, n, device=device)
    with torch.no_grad():
        a[0, 0] = float("nan")  # row 0 of a @ b: all nan
        a[1, 0] = float("inf")  # row 1: +-inf (b's first row has both signs)
    y = trifuse.gemm(a, b, dropout_p=0.5, seed=7)
    assert y[0].isnan().all()
    assert (y[1].isinf() | y[1].isnan()).all() and y[1].isnan().any()  # kept: +-inf, dropped: inf * 0
    clean = trifuse.gemm(a.detach()[2:], b, activation="none", dropout_p=0.5, seed=7)  # rows 2.. finite
    dropped = (clean == 0).nonzero()[0] + torch.tensor([2, 0], device=device)  # a dropped element, row >= 2
    dy = torch.ones_like(y)
    dy[dropped[0], dropped[1]] = float("nan")
    trifuse.gemm(a, b, activation="none", dropout_p=0.5, seed=7).backward(dy)
    assert a.grad[dropped[0]].isnan().all()  # the nan gradient of a dropped element reaches a's row
    assert not a.grad[3 if dropped[0] == 2 else 2].isnan().any()


@pytest.mark.parametrize("seed", [-1, -5, 2**63 - 1, 2**63 + 3, 2**64 + 9, -(2**63)])
def test_int_and_tensor_seeds_agree(device, seed):
    """An int seed is its 64-bit two's complement, as an int64 tensor holds it: one mask either way, and the
    plain-torch oracle's."""
    a, b = torch.randn(16, 8, device=device), torch.randn(8, 40, device=device)
    y = trifuse.gemm(a, b, dropout_p=0.5, seed=seed)
    wrapped = (seed + 2**63) % 2**64 - 2**63
    assert torch.equal(y, trifuse.gemm(a, b, dropout_p=0.5, seed=torch.tensor(wrapped, device=device)))
    assert torch.equal(y != 0, keep_mask(seed, 16, 40, 0.5, device))


@pytest.mark.parametrize("m,n,p,seed", [(1, 1, 0.5, 3), (37, 83, 0.3, 1234), (64, 200, 0.9, 2**40 + 7),
                                        (130, 17, 0.05, 0)])
def test_dropout_mask_matches_oracle(device, m, n, p, seed):
    # The mask is the documented function of (seed, row, col), bit for bit, whatever the tiling: the
    # default config and narrow/wide portable tiles, against reference.dropout's plain-torch Philox.
    a, b = torch.randn(m, 24, device=device), torch.randn(24, n, device=device)
    full = trifuse.gemm(a, b, activation="silu")
    expect = keep_mask(seed, m, n, p, device)
    outs = [trifuse.gemm(a, b, activation="silu", dropout_p=p, seed=seed)]
    for cfg in (GemmConfig("portable", 16, 16, 16, 1), GemmConfig("portable", 32, 128, 16, 2)):
        outs.append(poison(torch.empty(m, n, device=device)))
        gemm_into(a, b, outs[-1], seed=torch.tensor([seed], device=device), activation="silu", dropout_p=p,
                  config=cfg)
    for out in outs:
        assert torch.equal(out != 0, expect & (full != 0))
        torch.testing.assert_close(out, torch.where(expect, full / (1 - p), 0.0))


def test_seed_tensor_stepped_in_place_before_backward(device):
    """The op keeps its own copy of a seed tensor: a training loop's counter stepped in place between the
    forward and the backward changes neither the backward's mask nor raises autograd's in-place error."""
    seed = torch.tensor([11], device=device)
    a = torch.randn(9, 16, device=device, requires_grad=True)
    b = torch.randn(16, 24, device=device)
    y = trifuse.gemm(a, b, dropout_p=0.5, seed=seed)
    seed += 1
    y.backward(torch.ones_like(y))
    keep = keep_mask(11, 9, 24, 0.5, device)
    torch.testing.assert_close(a.grad, (keep.float() / 0.5) @ b.t())


def test_int_seed_tensors_are_kept_not_refilled(device):
    """An int seed's device tensor is made once (no fill kernel a call), at most _INT_SEEDS_KEPT of them."""
    from trifuse.functional import gemm as fg
    dev = torch.empty(0, device=device).device
    first = fg._seed_tensor(77, dev)
    assert fg._seed_tensor(77, dev) is first and fg._seed_tensor(77 - 2**64, dev) is first
    assert int(first) == 77 and int(fg._seed_tensor(-1, dev)) == -1
    for value in range(1000, 1000 + 2 * fg._INT_SEEDS_KEPT):
        assert int(fg._seed_tensor(value, dev)) == value
    assert len(fg._INT_SEEDS) <= fg._INT_SEEDS_KEPT and (dev, 77) not in fg._INT_SEEDS


def test_dropout_seed_none_follows_torch_generator(device):
    a, b = torch.randn(16, 16, device=device), torch.randn(16, 48, device=device)
    torch.manual_seed(7)
    y1 = trifuse.gemm(a, b, dropout_p=0.5)
    torch.manual_seed(7)
    y2 = trifuse.gemm(a, b, dropout_p=0.5)
    y3 = trifuse.gemm(a, b, dropout_p=0.5)
    assert torch.equal(y1, y2) and not torch.equal(y2, y3)


def test_dropout_off_when_not_training(device):
    x, w = torch.randn(8, 16, device=device), torch.randn(12, 16, device=device)
    y = trifuse.linear(x, w, activation="relu", dropout_p=0.9, training=False)
    torch.testing.assert_close(y, torch.relu(x @ w.t()))


# ---- errors ---------------------------------------------------------------------------------------------

def test_bad_input(device):
    a, b = torch.randn(4, 5, device=device), torch.randn(5, 6, device=device)
    with pytest.raises(ValueError, match="inner dim 5"):
        trifuse.gemm(a, torch.randn(4, 6, device=device))
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        trifuse.gemm(a, b, torch.randn(5, device=device))
    with pytest.raises(TypeError, match="one dtype"):
        trifuse.gemm(a, b.half())
    with pytest.raises(TypeError, match="dtype"):
        trifuse.gemm(a.double(), b.double())
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        trifuse.gemm(a, b, dropout_p=1.0)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        trifuse.linear(a, b.t(), dropout_p=-0.1, training=False)
    with pytest.raises(ValueError, match="activation must be one of"):
        trifuse.gemm(a, b, activation="tanh")
    with pytest.raises(ValueError, match="residual must have the output's shape"):
        trifuse.gemm(a, b, residual=torch.randn(4, 5, device=device))
    with pytest.raises(ValueError, match=r"expected weight of shape \(N, 5\)"):
        trifuse.linear(a, torch.randn(6, 4, device=device))
    with pytest.raises(ValueError, match="2 dims"):
        trifuse.gemm(a, torch.randn(5, device=device))
    with pytest.raises(TypeError, match="torch.Tensor"):
        trifuse.gemm([[1.0]], b)
    with pytest.raises(ValueError, match="activation must be one of"):
        trifuse.nn.FusedLinear(4, 5, activation="swish")
    with pytest.raises(ValueError, match=r"FusedLinear: dropout must be in \[0, 1\), got 1.5"):
        trifuse.nn.FusedLinear(4, 5, dropout=1.5)
    other = torch.device("meta")
    with pytest.raises(ValueError, match="device"):
        trifuse.gemm(a, b.to(other))


def test_bad_seed_is_a_clear_error_with_or_without_dropout(device):
    a, b = torch.randn(4, 5, device=device), torch.randn(5, 6, device=device)
    with pytest.raises(ValueError, match=r"seed tensor must hold one element, got shape \(2,\)"):
        trifuse.gemm(a, b, dropout_p=0.1, seed=torch.tensor([1, 2], device=device))
    with pytest.raises(TypeError, match="seed tensor must have an integer dtype, got torch.float32"):
        trifuse.gemm(a, b, dropout_p=0.1, seed=torch.tensor(1.7, device=device))
    with pytest.raises(TypeError, match="seed must be an int, an integer tensor or None, got str"):
        trifuse.gemm(a, b, seed="abc")  # dropout off: still checked
    with pytest.raises(TypeError, match="trifuse.linear: seed must be an int"):
        trifuse.linear(a, b.t(), dropout_p=0.1, training=False, seed=object())
    with pytest.raises(ValueError, match="seed tensor must hold a value .* got one on the meta device"):
        trifuse.linear(a, b.t(), dropout_p=0.5, seed=torch.tensor(1, device="meta"))
    # one-element integer tensors of any shape are seeds; the same value gives the same mask
    y0 = trifuse.gemm(a, b, dropout_p=0.5, seed=torch.tensor([[5]], device=device))
    torch.testing.assert_close(trifuse.gemm(a, b, dropout_p=0.5, seed=5), y0, rtol=0, atol=0)


def test_flags_must_be_bools(device):
    """training="no" is truthy: taken as a flag it kept dropout on (half of the values dropped)."""
    x, w = torch.randn(2, 8, device=device), torch.randn(8, 8, device=device)
    with pytest.raises(TypeError, match="trifuse.linear: training must be a bool, got str"):
        trifuse.linear(x, w, dropout_p=0.5, training="no", seed=1)
    with pytest.raises(TypeError, match="trifuse.gemm: recompute must be a bool, got str"):
        trifuse.gemm(x, w, recompute="no")
    torch.testing.assert_close(trifuse.linear(x, w, dropout_p=0.5, training=np.bool_(False)), x @ w.t())


@pytest.mark.parametrize("activation", ["none", "silu"])
def test_second_derivative_is_a_clear_error_not_a_silent_drop(device, activation):
    """The backward's kernels have no autograd: a create_graph=True gradient must not pretend to carry a
    second-order part."""
    a = torch.randn(4, 5, device=device, requires_grad=True)
    b = torch.randn(5, 3, device=device, requires_grad=True)
    (ga,) = torch.autograd.grad(trifuse.gemm(a, b, activation=activation).sum(), a, create_graph=True)
    (plain,) = torch.autograd.grad(trifuse.gemm(a, b, activation=activation).sum(), a)
    torch.testing.assert_close(ga, plain, rtol=0, atol=0)  # the first derivative itself is unchanged
    with pytest.raises(RuntimeError, match="trifuse.gemm_fwd: its backward is not differentiable"):
        torch.autograd.grad(ga.pow(2).sum(), (a, b))
    with pytest.raises(RuntimeError, match="backward is not differentiable"):
        ga.pow(2).sum().backward()


def test_opcheck(device):
    a, b = torch.randn(9, 17, device=device), torch.randn(17, 11, device=device)
    bias, seed = torch.randn(11, device=device), torch.tensor([3], device=device)
    utils = ("test_schema", "test_autograd_registration")
    op = torch.ops.trifuse.gemm_fwd.default
    torch.library.opcheck(op, (a, b, bias, None, None, "silu", 0.0, None, True, False, False), test_utils=utils)
    torch.library.opcheck(op, (a, b, None, torch.randn(9, 11, device=device), seed, "gelu", 0.2, None, False,
                               False, True), test_utils=utils)


# ---- GPU ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 4096, 4096), (64, 256, 128), (8191, 1000, 520), (2048, 2048, 2048)])
def test_gpu_shapes_bf16(device, shape):
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, k, device=device, dtype=torch.bfloat16).t() / 32
    bias = torch.randn(n, device=device, dtype=torch.bfloat16)
    res = torch.randn(m, n, device=device, dtype=torch.bfloat16)
    check(a, b, bias, "gelu", res)


@pytest.mark.gpu
def test_opcheck_full_gpu(device):
    a = torch.randn(300, 200, device=device, dtype=torch.bfloat16)
    b = torch.randn(100, 200, device=device, dtype=torch.bfloat16).t()
    bias, seed = torch.randn(100, device=device, dtype=torch.bfloat16), torch.tensor([3], device=device)
    torch.library.opcheck(torch.ops.trifuse.gemm_fwd.default,
                          (a, b, bias, None, seed, "silu", 0.1, None, True, False, False))


@pytest.mark.gpu
def test_cpu_tensor_on_gpu_path_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        trifuse.gemm(torch.randn(4, 4), torch.randn(4, 4))
