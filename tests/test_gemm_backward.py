"""Backward of trifuse.gemm / trifuse.linear, FusedLinear, and training end to end."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trifuse
from helpers import assert_close_to_ref
from test_gemm import ACT_FNS
from trifuse.ops.gemm import ACTIVATIONS
from trifuse.reference.dropout import keep_mask as dropout_oracle
from trifuse.runtime import INTERPRET

FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def keep_mask(m, n, p, seed, device, dtype=torch.float32):
    """keep/(1-p) from the mask's oracle (plain torch ops, independent of the kernels)."""
    return dropout_oracle(seed, m, n, p, device).to(dtype) / (1 - p)


def grads(fn, tensors, dy):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]
    out = fn(*leaves)
    present = [t for t in leaves if t is not None]
    g = torch.autograd.grad(out, present, dy)
    it = iter(g)
    return out, [next(it) if t is not None else None for t in leaves]


def check_grads(x, w, bias, res, activation, p, seed=11, recompute=False, floor=None):
    n = w.shape[0]
    dtype = x.dtype
    dy = torch.randn(*x.shape[:-1], n, device=x.device).to(dtype)
    scale = keep_mask(x[..., :1].reshape(-1, 1).shape[0], n, p, seed, x.device).view(*x.shape[:-1], n).double() \
        if p > 0 else None

    def ours(x, w, b, r):
        return trifuse.linear(x, w, b, activation=activation, dropout_p=p, seed=seed, residual=r,
                              recompute=recompute)

    def ref_fn(x, w, b, r):
        y = ACT_FNS[activation](F.linear(x, w, b))
        if scale is not None:
            y = y * scale.to(y.dtype)
        return y + r if r is not None else y

    out, g_ours = grads(ours, (x, w, bias, res), dy)
    dbl = [t.double() if t is not None else None for t in (x, w, bias, res)]
    ref, g_ref = grads(ref_fn, dbl, dy.double())
    if dtype == torch.float32 or x.device.type == "cuda":
        _, g_torch = grads(ref_fn, (x, w, bias, res), dy)
    else:  # torch's CPU half matmul: compare against its fp32 result rounded, as the dtype's own error
        _, g32 = grads(ref_fn, [t.float() if t is not None else None for t in (x, w, bias, res)], dy.float())
        g_torch = [t.to(dtype) if t is not None else None for t in g32]
    fl = floor or FLOOR[dtype]
    assert_close_to_ref(out, ref, floor=fl * 4 if dtype != torch.float32 else fl, what="out")
    for name, go, gr, gt in zip(("dx", "dw", "dbias", "dres"), g_ours, g_ref, g_torch):
        if go is None:
            continue
        assert go.dtype == gt.dtype
        assert_close_to_ref(go, gr, gt, floor=fl, what=name)
    return g_ours


@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_fp32(device, activation, has_bias, dropout):
    x = torch.randn(37, 29, device=device)
    w = torch.randn(23, 29, device=device) / 4
    bias = torch.randn(23, device=device) if has_bias else None
    check_grads(x, w, bias, None, activation, dropout)


@pytest.mark.parametrize("activation", ["silu", "gelu", "relu2"])
def test_gradients_fp16(device, activation):
    x = torch.randn(33, 40, device=device).half()
    w = (torch.randn(24, 40, device=device) / 6).half()
    check_grads(x, w, torch.randn(24, device=device).half(), None, activation, 0.1, floor=5e-3)


@pytest.mark.parametrize("activation", ["gelu_tanh", "leaky_relu", "silu"])
def test_recompute_matches_saved_pre(device, activation):
    x = torch.randn(21, 30, device=device)
    w = torch.randn(26, 30, device=device) / 4
    bias = torch.randn(26, device=device)
    torch.manual_seed(0)  # the same dy for both
    g_saved = check_grads(x, w, bias, None, activation, 0.2)
    torch.manual_seed(0)
    g_recomp = check_grads(x, w, bias, None, activation, 0.2, recompute=True)
    for a, b in zip(g_saved, g_recomp):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
def test_fp16_operands_fp32_out_keep_a_wide_pre(device, activation, recompute):
    """fp16 operands with out_dtype=fp32: pre = a @ b past fp16's range (8e4) is kept (or recomputed) in fp32,
    so its gradient (300, within fp16's range, where act'(pre) = 1) is finite and right, as out is, on both
    backward paths."""
    a = torch.full((2, 4), 200.0, dtype=torch.float16, device=device, requires_grad=True)
    b = torch.full((4, 3), 100.0, dtype=torch.float16, device=device, requires_grad=True)
    y = trifuse.gemm(a, b, activation=activation, out_dtype=torch.float32, recompute=recompute)
    assert y.dtype == torch.float32 and y.isfinite().all()
    y.sum().backward()
    a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ACT_FNS[activation](a64 @ b64).sum().backward()
    assert a.grad.isfinite().all() and b.grad.isfinite().all()
    torch.testing.assert_close(a.grad.double(), a64.grad, rtol=2e-3, atol=0)
    torch.testing.assert_close(b.grad.double(), b64.grad, rtol=2e-3, atol=0)


def test_residual_batched_non_contiguous(device):
    x = torch.randn(3, 11, 2, 20, device=device).transpose(1, 2)  # (3, 2, 11, 20), a copy to flatten
    w = torch.randn(20, 17, device=device).t()  # (17, 20) non-contiguous weight
    res = torch.randn(3, 2, 11, 17, device=device)
    check_grads(x, w, torch.randn(17, device=device), res, "silu", 0.3)


@pytest.mark.parametrize("mkn", [(1, 5, 7), (0, 5, 7), (6, 0, 4), (5, 4, 0), (127, 3, 129)])
def test_gradients_odd_and_zero_sizes(device, mkn):
    m, k, n = mkn
    x, w = torch.randn(m, k, device=device), torch.randn(n, k, device=device)
    g = check_grads(x, w, torch.randn(n, device=device), None, "gelu", 0.0)
    assert g[0].shape == x.shape and g[1].shape == w.shape and g[2].shape == (n,)


def test_gemm_b_gradient_layouts(device):
    # b given as (K, N): its gradient comes back in that layout; b given as w.T: weight.grad is contiguous.
    a = torch.randn(9, 12, device=device, requires_grad=True)
    b = torch.randn(12, 7, device=device, requires_grad=True)
    trifuse.gemm(a, b, activation="relu").sum().backward()
    torch.testing.assert_close(b.grad, a.detach().t() @ (a.detach() @ b.detach() > 0).float())
    w = torch.randn(7, 12, device=device, requires_grad=True)
    trifuse.linear(a, w, activation="silu").sum().backward()
    assert w.grad.is_contiguous()


def test_backward_uses_the_forward_mask(device):
    x = torch.randn(40, 16, device=device, requires_grad=True)
    w = torch.randn(64, 16, device=device, requires_grad=True)
    y = trifuse.linear(x, w, activation="none", dropout_p=0.5, seed=99)
    dy = torch.ones_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    mask = keep_mask(40, 64, 0.5, 99, device)
    assert torch.equal(y == 0, mask == 0)
    torch.testing.assert_close(dx, mask @ w.detach())


def test_deterministic_gradients(device):
    x = torch.randn(70, 33, device=device)
    w = torch.randn(45, 33, device=device)
    b = torch.randn(45, device=device)
    dy = torch.randn(70, 45, device=device)
    runs = [grads(lambda x, w, b: trifuse.linear(x, w, b, activation="silu", dropout_p=0.1, seed=5),
                  (x, w, b), dy)[1] for _ in range(2)]
    for g1, g2 in zip(*runs):
        assert torch.equal(g1, g2)


def test_fused_linear_state_dict_round_trip(device):
    ref = torch.nn.Linear(12, 20).to(device)
    fused = trifuse.nn.FusedLinear(12, 20, activation="gelu").to(device)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(5, 12, device=device)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), F.gelu(ref(x)))
    back = torch.nn.Linear(12, 20).to(device)
    back.load_state_dict(fused.state_dict())
    assert torch.equal(back.weight, ref.weight) and torch.equal(back.bias, ref.bias)
    assert set(fused.state_dict()) == {"weight", "bias"}
    assert isinstance(fused, torch.nn.Linear)
    no_bias = trifuse.nn.FusedLinear(12, 20, bias=False, activation="relu")
    assert no_bias.bias is None


def test_fused_linear_takes_nn_linears_arguments(device):
    """nn.Linear's positional arguments (bias, device, dtype) mean the same; plain it is nn.Linear (no
    activation); the fused extras are keyword-only and checked at construction."""
    torch.manual_seed(0)
    ref = torch.nn.Linear(6, 10, True, device, torch.float32)
    torch.manual_seed(0)
    fused = trifuse.nn.FusedLinear(6, 10, True, device, torch.float32)
    assert fused.weight.device == ref.weight.device and fused.activation == "none"
    x = torch.randn(3, 6, device=device)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x))
    assert "recompute=True" in repr(trifuse.nn.FusedLinear(6, 10, recompute=True))
    with pytest.raises(TypeError, match="recompute"):
        trifuse.nn.FusedLinear(6, 10, recompute="yes")
    with pytest.raises(TypeError):
        trifuse.nn.FusedLinear(6, 10, True, device, torch.float32, "silu")


def test_fused_linear_on_meta_is_a_clear_error():
    layer = trifuse.nn.FusedLinear(4, 5, device="meta")
    with pytest.raises(ValueError, match="meta"):
        layer(torch.randn(2, 4, device="meta"))


def test_fused_linear_dropout_follows_training_flag(device):
    layer = trifuse.nn.FusedLinear(16, 32, activation="relu", dropout=0.5).to(device)
    x = torch.randn(8, 16, device=device)
    layer.eval()
    torch.testing.assert_close(layer(x), torch.relu(F.linear(x, layer.weight, layer.bias)))
    layer.train()
    assert (layer(x) == 0).float().mean() > 0.4


def _mlp(fused: bool, act: str, device, dtype=torch.float32, sizes=(16, 32, 8)):
    torch.manual_seed(0)
    d_in, hidden, d_out = sizes
    if fused:
        return torch.nn.Sequential(trifuse.nn.FusedLinear(d_in, hidden, activation=act),
                                   trifuse.nn.FusedLinear(hidden, d_out, activation="none")).to(device, dtype)
    layers = {"silu": torch.nn.SiLU(), "gelu": torch.nn.GELU()}
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), layers[act],
                               torch.nn.Linear(hidden, d_out)).to(device, dtype)


def _train(model, data, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    x_all, y_all = data
    for i in range(steps):
        j = (i * 16) % x_all.shape[0]
        loss = F.mse_loss(model(x_all[j:j + 16]).float(), y_all[j:j + 16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses)


def test_mlp_training_matches_nn_linear(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 16, generator=g).to(device)
    y = torch.tanh(x @ torch.randn(16, 8, generator=g).to(device) / 2)
    ours = _train(_mlp(True, "silu", device), (x, y), 200)
    ref = _train(_mlp(False, "silu", device), (x, y), 200)
    assert ours[-20:].mean() < 0.3 * ours[:10].mean()  # it learns
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-3)


def test_opcheck_backward_ops(device):
    dy, pre = torch.randn(9, 11, device=device), torch.randn(9, 11, device=device)
    seed = torch.tensor([4], device=device)
    torch.library.opcheck(torch.ops.trifuse.gemm_dact.default,
                          (dy, pre, seed, "gelu", 0.2, torch.float32, torch.float32), test_utils=("test_schema",))
    a, b = torch.randn(9, 6, device=device), torch.randn(6, 11, device=device)
    torch.library.opcheck(torch.ops.trifuse.gemm_dact_recompute.default,
                          (a, b, torch.randn(11, device=device), dy, None, "silu", 0.0, False),
                          test_utils=("test_schema",))


# ---- GPU ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["silu", "gelu", "relu2"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradients_bf16_large_gpu(device, activation, dropout):
    x = torch.randn(2048, 1024, device=device, dtype=torch.bfloat16)
    w = torch.randn(3072, 1024, device=device, dtype=torch.bfloat16) / 32
    check_grads(x, w, torch.randn(3072, device=device, dtype=torch.bfloat16), None, activation, dropout)


@pytest.mark.gpu
def test_opcheck_full_gpu_backward(device):
    x = torch.randn(256, 128, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(192, 128, device=device, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(192, device=device, dtype=torch.bfloat16, requires_grad=True)
    seed = torch.tensor([3], device=device)
    for recompute in (False, True):
        torch.library.opcheck(torch.ops.trifuse.gemm_fwd.default,
                              (x, w.t(), b, None, seed, "gelu", 0.1, None, not recompute, False, recompute))


@pytest.mark.gpu
def test_torch_compile_fullgraph_training_gpu(device):
    model = torch.nn.Sequential(trifuse.nn.FusedLinear(256, 512, activation="silu", dropout=0.1),
                                trifuse.nn.FusedLinear(512, 256, activation="none")).to(device, torch.bfloat16)
    compiled = torch.compile(model, fullgraph=True)
    # Adam, not SGD(lr=1e-2): SGD's steps on this loss are ~1e-6, below bf16's resolution of the weights, so
    # the loss only moved with the dropout mask (nn.Linear + nn.Dropout behaves the same way). Adam's
    # steps of ~lr halve the loss in 5 steps.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(512, 256, device=device, dtype=torch.bfloat16)
    first = None
    for _ in range(5):
        loss = compiled(x).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.8 * first


@pytest.mark.gpu
def test_mlp_training_bf16_gpu(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 256, generator=g).to(device, torch.bfloat16)
    # A learnable target: sin(x @ R) with |x @ R| ~ 16 is noise to a 256-512-64 MLP seeing ~1 epoch
    # (nn.Linear goes 0.70 -> 0.59 on it, as FusedLinear did); tanh of a unit-scale projection is not.
    y = torch.tanh(x.float() @ torch.randn(256, 64, generator=g).to(device) / 32)
    sizes = (256, 512, 64)
    ours = _train(_mlp(True, "gelu", device, torch.bfloat16, sizes), (x, y), 300)
    ref = _train(_mlp(False, "gelu", device, torch.bfloat16, sizes), (x, y), 300)
    assert ours[-30:].mean() < 0.7 * ours[:10].mean()
    assert abs(ours[-30:].mean() - ref[-30:].mean()) < 0.05 * ref[-30:].mean() + 1e-3



def test_autograd_saved_bytes_counts_each_storage_once():
    from trifuse.analysis.memory import autograd_saved_bytes

    x = torch.randn(6, 10, requires_grad=True)
    nbytes, y = autograd_saved_bytes(torch.sin, x)
    assert nbytes == x.nbytes and torch.equal(y, torch.sin(x))
    assert autograd_saved_bytes(torch.mul, x, x)[0] == x.nbytes  # saved twice, one storage
    assert autograd_saved_bytes(lambda: x.detach() + 1)[0] == 0


@pytest.mark.parametrize("recompute", [False, True])
def test_activation_memory_of_fused_linear(device, recompute):
    # What the graph keeps per layer: x, the weight, the bias and the (M, N) pre-activation; recompute=True
    # keeps no (M, N) tensor at all. Eager silu(linear) keeps x, the weight and silu's (M, N) input.
    from trifuse.analysis.memory import autograd_saved_bytes

    m, k, n = 24, 16, 40
    x = torch.randn(m, k, device=device, requires_grad=True)
    w = torch.randn(n, k, device=device, requires_grad=True)
    b = torch.randn(n, device=device, requires_grad=True)
    ours, _ = autograd_saved_bytes(lambda: trifuse.linear(x, w, b, activation="silu", recompute=recompute))
    eager, _ = autograd_saved_bytes(lambda: F.silu(F.linear(x, w, b)))
    inputs = x.nbytes + w.nbytes + b.nbytes
    assert ours == inputs + (0 if recompute else m * n * 4)
    assert eager == x.nbytes + w.nbytes + m * n * 4


@pytest.mark.skipif(not INTERPRET, reason="the CPU-mode bench; the GPU bench runs in make gpu-check")
def test_bench_reports_graph_memory():
    from trifuse.bench import harness, report, suites

    suite = suites.load("gemm")
    result = harness.run_suite(suite, suite.cases(scale="cpu", shapes=[(8, 16, 24)], directions=["bwd"]),
                               progress=False, only=frozenset({"eager"}))
    mine = [r for r in result["rows"] if r["provider"] == "trifuse"]
    # bias+silu: x (8x16), w (24x16), b (24) and pre (8x24) in fp32; eager: x, w and silu's input.
    assert mine[0]["graph_mb"] * 2**20 == 4 * (8 * 16 + 24 * 16 + 24 + 8 * 24)
    assert mine[0]["graph_mb_eager"] * 2**20 == 4 * (8 * 16 + 24 * 16 + 8 * 24)
    assert "graph MiB (eager)" in report.markdown(result)


def test_fused_linear_under_autocast_as_nn_linear(device):
    """Under autocast FusedLinear runs in autocast's dtype as nn.Linear does, behind an nn.Linear or on an
    fp32 input, and its fp32 parameters get fp32 gradients."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 8).to(device)
    fused = trifuse.nn.FusedLinear(8, 6, activation="silu").to(device)
    ref = nn.Linear(8, 6).to(device)
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(4, 8, device=device)
    with torch.autocast(device.type, dtype=torch.float16):
        y = fused(lin(x))
        y_ref = F.silu(ref(lin(x)))
        assert y.dtype == y_ref.dtype == torch.float16
        assert fused(x).dtype == torch.float16
    torch.testing.assert_close(y.float(), y_ref.float(), atol=2e-3, rtol=2e-3)
    y.float().sum().backward()
    assert fused.weight.grad.dtype == torch.float32 and fused.weight.grad.isfinite().all()
