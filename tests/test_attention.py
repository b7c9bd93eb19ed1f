import math

import numpy as np
import pytest
import torch

import trifuse
from helpers import ATTENTION_FLOOR as FLOOR
from helpers import assert_close_to_ref, make_qkv, poison, sdpa
from trifuse.functional.attention import attention_with_lse
from trifuse.ops.attention import BwdConfig, FwdConfig, attention_bwd_into, attention_fwd_into
from trifuse.ops.attention_plan import attention_flops
from trifuse.reference.attention import attention_lse_ref, attention_ref, naive_attention


def check(q, k, v, causal, scale=None, grads=True, torch_math=False):
    """Forward and gradients against SDPA math in fp64; budget: 2x SDPA's own same-dtype error + floor."""
    floor = FLOOR[q.dtype]
    leaves = [t.detach().clone().requires_grad_(grads) for t in (q, k, v)]
    out = trifuse.attention(*leaves, causal=causal, scale=scale)
    ref_leaves = [t.detach().double().requires_grad_(grads) for t in (q, k, v)]
    ref = sdpa(*ref_leaves, causal, scale, math=True)
    torch_leaves = [t.detach().clone().requires_grad_(grads) for t in (q, k, v)]
    theirs = sdpa(*torch_leaves, causal, scale, math=torch_math)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert_close_to_ref(out, ref, theirs, floor=floor)
    if not grads:
        return
    do = torch.randn_like(out)
    ours_g = torch.autograd.grad(out, leaves, do)
    ref_g = torch.autograd.grad(ref, ref_leaves, do.double())
    torch_g = torch.autograd.grad(theirs, torch_leaves, do)
    for name, a, r, t in zip(("dq", "dk", "dv"), ours_g, ref_g, torch_g):
        assert a.shape == r.shape
        assert_close_to_ref(a, r, t, floor=floor, what=name)


# (B, Hq, Hkv, Sq, Skv, D): lengths that are not block multiples, Sq != Skv both ways, GQA 4:1, MQA 8:1,
# every head dim (96 runs in a padded 128 block; 256 once).
SHAPES = [
    (1, 2, 2, 1, 1, 32),
    (1, 2, 2, 17, 17, 64),
    (2, 2, 2, 64, 64, 32),
    (1, 2, 2, 127, 127, 32),
    (1, 2, 2, 17, 45, 64),
    (1, 2, 2, 45, 17, 64),
    (1, 8, 2, 33, 47, 32),
    (1, 8, 1, 40, 40, 64),
    (1, 4, 2, 50, 20, 96),
    (1, 2, 1, 33, 65, 128),
    (1, 2, 2, 20, 37, 256),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_sdpa_fp32(device, shape, causal):
    b, hq, hkv, sq, skv, d = shape
    check(*make_qkv(b, hq, hkv, sq, skv, d, torch.float32, device), causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 2, 2, 45, 17, 64), (1, 8, 2, 33, 47, 32), (1, 2, 1, 40, 40, 128)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_sdpa_fp16(device, shape, causal):
    b, hq, hkv, sq, skv, d = shape
    check(*make_qkv(b, hq, hkv, sq, skv, d, torch.float16, device), causal)


def test_causal_alignment_is_top_left(device):
    # With Sq > Skv, rows past Skv see every key; with Sq < Skv, row i sees keys 0..i only (SDPA's tril).
    q, k, v = make_qkv(1, 1, 1, 6, 3, 32, torch.float32, device)
    out = trifuse.attention(q, k, v, causal=True)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])
    q, k, v = make_qkv(1, 1, 1, 3, 6, 32, torch.float32, device)
    out = trifuse.attention(q, k, v, causal=True)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])
    torch.testing.assert_close(out, sdpa(q, k, v, True))
    # A numpy bool is a bool (as linear's training takes one).
    torch.testing.assert_close(trifuse.attention(q, k, v, causal=np.bool_(True)), out, rtol=0, atol=0)


@pytest.mark.parametrize("scale", [0.3, -0.5, 0.0])
def test_scale_argument(device, scale):
    check(*make_qkv(1, 2, 2, 19, 23, 32, torch.float32, device), True, scale=scale, torch_math=True)


def test_large_logits_stay_finite(device):
    # Scores of a few hundred: the online max keeps exp2 in range.
    check(*make_qkv(1, 2, 2, 40, 40, 64, torch.float32, device, scale=5.0), True)


def test_lse(device):
    q, k, v = make_qkv(2, 4, 2, 37, 29, 64, torch.float32, device)
    for causal in (False, True):
        _out, lse = attention_with_lse(q, k, v, causal=causal)
        assert lse.dtype == torch.float32 and lse.shape == (2, 4, 37)
        torch.testing.assert_close(lse.double(), attention_lse_ref(q, k, causal=causal), atol=1e-5, rtol=1e-5)


def test_fused_qkv_views_without_copies(device):
    b, s, h, d = 2, 33, 2, 64
    qkv = torch.randn(b, s, 3 * h * d, device=device, requires_grad=True)
    q, k, v = qkv.view(b, s, 3, h, d).permute(2, 0, 3, 1, 4)
    assert q.stride(-1) == 1 and not q.is_contiguous()
    out = trifuse.attention(q, k, v, causal=True)
    (g,) = torch.autograd.grad(out, qkv, torch.ones_like(out))  # expanded grad: stride 0 everywhere
    qkv_r = qkv.detach().double().requires_grad_()
    qr, kr, vr = qkv_r.view(b, s, 3, h, d).permute(2, 0, 3, 1, 4)
    ref = sdpa(qr, kr, vr, True)
    (g_ref,) = torch.autograd.grad(ref, qkv_r, torch.ones_like(ref))
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(g.double(), g_ref, atol=5e-5, rtol=1e-5)


def test_strided_output_grad_and_transposed_layout(device):
    # q/k/v as (B, S, H, D) tensors transposed to (B, H, S, D); dO transposed too.
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in make_qkv(1, 4, 2, 30, 30, 32,
                                                                            torch.float32, device))
    check(q, k, v, False)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fwd_cfg,bwd_cfg", [
    (FwdConfig(16, 16, 4, 1), BwdConfig(16, 16, 16, 16, 4, 4, 1)),
    (FwdConfig(16, 32, 4, 1), BwdConfig(32, 16, 16, 32, 4, 4, 1)),
    (FwdConfig(64, 16, 4, 1), BwdConfig(16, 64, 64, 16, 4, 4, 1)),
    (FwdConfig(32, 16, 4, 1, fold_scale=True), BwdConfig(16, 32, 32, 16, 4, 4, 1)),
])
def test_launchers_any_tiles_write_every_element(device, fwd_cfg, bwd_cfg, causal):
    # Poisoned outputs catch unwritten elements; tiles larger, smaller and unequal exercise the stage split.
    q, k, v = make_qkv(1, 4, 2, 41, 53, 32, torch.float32, device)
    out = poison(torch.empty_like(q))
    lse = poison(torch.empty(q.shape[:3], device=device))
    attention_fwd_into(q, k, v, out, lse, causal, 0.2, config=fwd_cfg)
    qd, kd, vd = (t.double().requires_grad_() for t in (q, k, v))
    ref = attention_ref(qd, kd, vd, causal=causal, scale=0.2)
    torch.testing.assert_close(out.double(), ref.detach(), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), attention_lse_ref(q, k, causal=causal, scale=0.2), atol=2e-5, rtol=1e-5)
    do = torch.randn_like(out)
    dq, dk, dv = (poison(torch.empty_like(t)) for t in (q, k, v))
    attention_bwd_into(do, q, k, v, out, lse, dq, dk, dv, causal, 0.2, config=bwd_cfg)
    for got, want in zip((dq, dk, dv), torch.autograd.grad(ref, (qd, kd, vd), do.double())):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [0.2, -0.3, 0.0])
@pytest.mark.parametrize("causal", [False, True])
def test_folded_scale_forward_any_sign(device, causal, scale):
    # The folded path (scale inside exp2's argument) needs scale > 0; the launcher must fall back otherwise.
    q, k, v = make_qkv(1, 2, 1, 37, 45, 32, torch.float32, device)
    out = poison(torch.empty_like(q))
    lse = poison(torch.empty(q.shape[:3], device=device))
    attention_fwd_into(q, k, v, out, lse, causal, scale, config=FwdConfig(16, 16, 4, 1, fold_scale=True))
    ref = attention_ref(q.double(), k.double(), v.double(), causal=causal, scale=scale)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), attention_lse_ref(q, k, causal=causal, scale=scale), atol=2e-5,
                               rtol=1e-5)


def test_keys_past_the_queries_get_zero_grad(device):
    # Top-left causal with Sq < Skv: keys j >= Sq are never seen, their dK and dV are exactly zero.
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 2, 5, 40, 32, torch.float32, device))
    out = trifuse.attention(q, k, v, causal=True)
    _, dk, dv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert (dk[:, :, 5:] == 0).all() and (dv[:, :, 5:] == 0).all()


def test_backward_is_deterministic(device):
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 4, 2, 33, 33, 32, torch.float16, device))
    out = trifuse.attention(q, k, v, causal=True)
    do = torch.randn_like(out)
    first = torch.autograd.grad(out, (q, k, v), do, retain_graph=True)
    second = torch.autograd.grad(out, (q, k, v), do)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(0, 2, 2, 5, 5), (1, 0, 0, 5, 5), (1, 2, 2, 0, 5), (1, 2, 2, 5, 0),
                                   (1, 2, 1, 0, 0)])
def test_empty(device, shape):
    b, hq, hkv, sq, skv = shape
    q, k, v = (t.requires_grad_() for t in make_qkv(b, hq, hkv, sq, skv, 32, torch.float32, device))
    out = trifuse.attention(q, k, v, causal=True)
    assert out.shape == q.shape
    # Skv = 0: SDPA's math returns zeros (softmax over nothing, times an empty V).
    ref = sdpa(q.detach(), k.detach(), v.detach(), True) if b * hq * skv else torch.zeros_like(q)
    torch.testing.assert_close(out.detach(), ref)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out), allow_unused=True)
    for g, t in zip(grads, (q, k, v)):
        assert g.shape == t.shape and (g == 0).all()


def test_second_derivative_is_a_clear_error(device):
    q, k, v = (torch.randn(1, 2, 5, 32, device=device, requires_grad=True) for _ in range(3))
    (gq,) = torch.autograd.grad(trifuse.attention(q, k, v).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="backward is not differentiable"):
        torch.autograd.grad(gq.pow(2).sum(), (q, k, v))


def test_bad_input(device):
    q, k, v = make_qkv(1, 4, 2, 8, 8, 64, torch.float16, device)
    with pytest.raises(ValueError, match=r"head dim must be one of .* got 48"):
        trifuse.attention(*make_qkv(1, 2, 2, 8, 8, 48, torch.float16, device))
    with pytest.raises(ValueError, match=r"q heads \(4\) must be a multiple of k/v heads, got 3"):
        trifuse.attention(q, *make_qkv(1, 3, 3, 8, 8, 64, torch.float16, device)[1:])
    with pytest.raises(ValueError, match="batch must equal q's batch 1, got 2"):
        trifuse.attention(q, *make_qkv(2, 2, 2, 8, 8, 64, torch.float16, device)[1:])
    with pytest.raises(ValueError, match="k and v must have one shape"):
        trifuse.attention(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="head dim must equal q's head dim 64, got 32"):
        trifuse.attention(q, *make_qkv(1, 2, 2, 8, 8, 32, torch.float16, device)[1:])
    with pytest.raises(ValueError, match="must have 4 dims, got 3"):
        trifuse.attention(q[0], k, v)
    with pytest.raises(TypeError, match="dtype"):
        trifuse.attention(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="one dtype"):
        trifuse.attention(q, k.float(), v)
    with pytest.raises(TypeError, match="torch.Tensor"):
        trifuse.attention(q.tolist(), k, v)
    with pytest.raises(TypeError, match="causal must be a bool"):
        trifuse.attention(q, k, v, causal=1)
    with pytest.raises(TypeError, match="causal must be a bool, got str"):
        attention_with_lse(q, k, v, causal="no")
    with pytest.raises(TypeError, match="scale must be a float"):
        trifuse.attention(q, k, v, scale="0.1")
    other = torch.device("meta")
    with pytest.raises(ValueError, match="device|CUDA|CPU"):
        trifuse.attention(q, k.to(other), v.to(other))


def test_reference_oracles_agree(device):
    q, k, v = make_qkv(1, 4, 2, 20, 33, 32, torch.float32, device)
    for causal in (False, True):
        want = sdpa(q.double(), k.double(), v.double(), causal)
        torch.testing.assert_close(attention_ref(q, k, v, causal=causal, chunk=7), want)
        torch.testing.assert_close(naive_attention(q, k, v, causal=causal).double(), want, atol=1e-5, rtol=1e-5)


def test_flop_model():
    assert attention_flops(2, 4, 128, 128, 64, False) == 4 * 2 * 4 * 128 * 128 * 64
    assert attention_flops(2, 4, 128, 128, 64, True) == 4 * 2 * 4 * 128 * 128 * 64 / 2
    assert attention_flops(1, 1, 4, 4, 1, False, "bwd") == 2.5 * 64
    assert attention_flops(1, 1, 3, 5, 1, True) == 4 * (1 + 2 + 3)


def test_opcheck(device):
    q, k, v = make_qkv(1, 4, 2, 20, 24, 32, torch.float32, device)
    utils = ("test_schema", "test_autograd_registration")
    torch.library.opcheck(torch.ops.trifuse.attention_fwd.default, (q, k, v, True, 0.125), test_utils=utils)
    out, lse = attention_with_lse(q, k, v, causal=True, scale=0.125)
    torch.library.opcheck(torch.ops.trifuse.attention_bwd.default,
                          (torch.randn_like(out), q, k, v, out, lse, True, 0.125), test_utils=("test_schema",))


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 4, 4, 1000, 1000, 64), (1, 8, 1, 2048, 2048, 128),
                                   (1, 4, 2, 1000, 4096, 128), (1, 4, 4, 4096, 1000, 64),
                                   (2, 4, 2, 2048, 2048, 96), (1, 2, 2, 1024, 1024, 256),
                                   (1, 8, 2, 4096, 4096, 128)], ids=lambda s: "x".join(map(str, s)))
def test_half_precision_gpu(device, shape, causal, dtype):
    b, hq, hkv, sq, skv, d = shape
    check(*make_qkv(b, hq, hkv, sq, skv, d, dtype, device), causal)


@pytest.mark.gpu
def test_fp32_gpu_matches(device):
    check(*make_qkv(1, 4, 2, 300, 257, 64, torch.float32, device), True)


@pytest.mark.gpu
def test_opcheck_full_gpu(device):
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 4, 2, 300, 200, 64, torch.bfloat16, device))
    torch.library.opcheck(torch.ops.trifuse.attention_fwd.default, (q, k, v, True, 0.125))
    out, lse = attention_with_lse(q.detach(), k.detach(), v.detach(), causal=True, scale=0.125)
    args = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out, lse, True, 0.125)
    torch.library.opcheck(torch.ops.trifuse.attention_bwd.default, args)


@pytest.mark.gpu
def test_torch_compile_fullgraph(device):
    b, s, h, d = 2, 500, 4, 64
    x = torch.randn(b, s, 3 * h * d, device=device, dtype=torch.bfloat16, requires_grad=True)

    def f(x, attn):
        q, k, v = x.view(b, s, 3, h, d).permute(2, 0, 3, 1, 4)
        return attn(q * 1.5, k, v, causal=True).float().square().sum()

    attn = trifuse.attention
    compiled = torch.compile(lambda x: f(x, attn), fullgraph=True)
    out = compiled(x)
    (g,) = torch.autograd.grad(out, x)
    xr = x.detach().clone().requires_grad_()
    ref = f(xr, lambda q, k, v, causal: sdpa(q, k, v, causal))
    (g_ref,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(g.float(), g_ref.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.gpu
def test_torch_compile_fullgraph_gqa_causal(device):
    # Causal GQA with a small grid: the backward splits each KV group's query heads over programs (fp32
    # partials, then a sum) inside the traced op.
    b, s, hq, hkv, d = 2, 500, 8, 2, 64
    q = torch.randn(b, hq, s, d, device=device, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(b, hkv, s, d, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))

    def f(q, k, v, attn):
        return attn(q, k, v, causal=True).float().square().sum()

    compiled = torch.compile(lambda q, k, v: f(q, k, v, trifuse.attention), fullgraph=True)
    out = compiled(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v))
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = f(*leaves, lambda q, k, v, causal: sdpa(q, k, v, causal))
    refs = torch.autograd.grad(ref, leaves)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=1e-2)
    for g, r in zip(grads, refs):
        torch.testing.assert_close(g.float(), r.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.gpu
def test_memory_is_linear_in_sequence(device):
    b, h, s, d = 1, 4, 8192, 64
    q, k, v = (t.requires_grad_() for t in make_qkv(b, h, h, s, s, d, torch.bfloat16, device))
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = trifuse.attention(q, k, v, causal=True)
    torch.cuda.synchronize()
    fwd_peak = torch.cuda.max_memory_allocated() - base
    # Output + LSE: 2*h*s*d + 4*h*s bytes; the S x S matrix alone would be 2*h*s*s bytes (512 MiB here).
    assert fwd_peak <= 2 * (2 * h * s * d + 4 * h * s)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    bwd_peak = torch.cuda.max_memory_allocated() - base
    assert bwd_peak <= 6 * (2 * h * s * d) + 2 * 4 * h * s + (1 << 20)
    assert bwd_peak < 2 * h * s * s / 16


@pytest.mark.gpu
def test_long_sequence_gqa_bf16_against_chunked_reference(device):
    q, k, v = make_qkv(1, 8, 1, 8192, 8192, 128, torch.bfloat16, device)
    out = trifuse.attention(q, k, v, causal=True)
    ref = attention_ref(q, k, v, causal=True, dtype=torch.float32, chunk=1024)
    theirs = sdpa(q, k, v, True)
    assert_close_to_ref(out, ref, theirs, floor=FLOOR[torch.bfloat16])


@pytest.mark.gpu
def test_cpu_tensor_on_gpu_path_is_a_clear_error():
    q = torch.randn(1, 2, 8, 32)
    with pytest.raises(ValueError, match="CUDA"):
        trifuse.attention(q, q, q)


def test_default_scale_is_inverse_sqrt_d(device):
    q, k, v = make_qkv(1, 2, 2, 9, 9, 128, torch.float32, device)
    torch.testing.assert_close(trifuse.attention(q, k, v), trifuse.attention(q, k, v, scale=1 / math.sqrt(128)))


def test_head_slice_sums_into_any_strides(device):
    # The head-split dK/dV partials (split, B, Hkv, Skv, D) summed in order into strided outputs, every
    # element written (poisoned first), odd sizes.
    from trifuse.ops.attention import sum_head_slices

    split, b, hkv, skv, d = 3, 2, 3, 37, 96
    dk_parts, dv_parts = (torch.randn(split, b, hkv, skv, d, device=device) for _ in range(2))
    dk = poison(torch.empty(b, skv, hkv, d, device=device, dtype=torch.float16)).transpose(1, 2)
    dv = poison(torch.empty(b, hkv, skv, d, device=device))
    sum_head_slices(dk_parts, dv_parts, dk, dv)
    torch.testing.assert_close(dk, dk_parts.double().sum(0).half(), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(dv.double(), dv_parts.double().sum(0), atol=1e-5, rtol=1e-5)
