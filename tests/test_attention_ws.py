"""The warp-specialized Gluon attention kernels: the forward's choice rules (interpreter); the forward and the
experimental backward against fp64 (sm_90 GPU only)."""
import math

import pytest
import torch

import trifuse
import trifuse.ops.attention_ws as ows
from helpers import ATTENTION_FLOOR as FLOOR
from helpers import assert_close_to_ref, make_qkv, poison, sdpa
from trifuse.ops.attention import attention_bwd_into, attention_fwd_into
from trifuse.ops.attention_plan import attention_flops
from trifuse.ops.attention_ws import WS_MIN_FLOPS, WS_MIN_SQ, launch_fwd, tma_addressable, ws_applies, ws_fits
from trifuse.reference.attention import attention_lse_ref, attention_ref


def test_tma_addressable_rejects_zero_strides():
    """A dim longer than 1 with a zero stride (an expanded tensor, as autograd hands `out.sum()`'s gradient)
    takes the Triton kernels: a descriptor with zero strides faulted in the dK/dV kernel."""
    t = torch.randn(2, 4, 64, 128, dtype=torch.bfloat16)
    assert tma_addressable(t)
    assert not tma_addressable(torch.ones(1, 1, 1, 128, dtype=torch.bfloat16).expand(2, 4, 64, 128))
    assert not tma_addressable(t[:1].expand(2, 4, 64, 128))
    assert tma_addressable(t[:1])  # a dim of one: its stride never moves the address


@pytest.mark.parametrize("expanded", ["all", "rows"])
def test_backward_with_an_expanded_output_gradient(device, expanded):
    """dO expanded: out.sum()'s gradient (every stride 0) or one row broadcast (strides (0, 0, 0, 1)). On an
    H100 the shape is one the Gluon forward and dK/dV kernels take otherwise; the interpreter runs it small.
    SDPA's gradients (the low-precision baseline) take a dense copy of dO."""
    b, h, s, d, dtype = (2, 16, 2048, 128, torch.bfloat16) if device.type == "cuda" else (1, 2, 70, 64, torch.float32)
    q, k, v = (t.requires_grad_() for t in make_qkv(b, h, h, s, s, d, dtype, device))
    do = (torch.ones((), device=device, dtype=dtype) if expanded == "all"
          else torch.randn(d, device=device, dtype=dtype)).expand(b, h, s, d)
    grads = torch.autograd.grad(trifuse.attention(q, k, v, causal=True), (q, k, v), do)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    refs = torch.autograd.grad(attention_ref(qd, kd, vd, causal=True, scale=1 / math.sqrt(d)), (qd, kd, vd),
                               do.double())
    theirs = torch.autograd.grad(sdpa(q, k, v, True), (q, k, v), do.contiguous())
    for got, ref, their in zip(grads, refs, theirs):
        assert_close_to_ref(got, ref, their, floor=FLOOR[dtype])


@pytest.mark.parametrize("dtype, shape, causal, scale, takes", [
    (torch.bfloat16, (8, 16, 2048, 128, 16, 2048), True, 0.1, True),
    (torch.float16, (4, 16, 4096, 128, 2, 4096), False, 0.1, True),     # GQA
    (torch.float32, (8, 16, 2048, 128, 16, 2048), True, 0.1, False),    # fp32: the Triton kernel's ieee dots
    (torch.bfloat16, (8, 16, 2048, 96, 16, 2048), True, 0.1, False),    # D = 96
    (torch.bfloat16, (8, 16, 2048, 128, 16, 2048), True, 0.0, False),   # the scale folds into exp2: > 0
    (torch.bfloat16, (8, 16, 2048, 128, 16, 2048), True, -0.1, False),
    (torch.bfloat16, (512, 16, 64, 128, 16, 4096), False, 0.1, False),  # short query blocks (decode-like)
    (torch.bfloat16, (1, 16, 512, 128, 16, 512), True, 0.1, False),     # too small to pay for the launch
    (torch.bfloat16, (32, 16, 512, 128, 16, 512), True, 0.1, True),     # 2^35 FLOPs: the bench's smallest
    (torch.bfloat16, (8, 32, 2048, 64, 32, 2048), True, 0.1, False),    # D = 64 causal under 4096 keys
    (torch.bfloat16, (8, 32, 2048, 64, 32, 2048), False, 0.1, True),
    (torch.bfloat16, (2, 32, 8192, 64, 32, 8192), True, 0.1, True),
])
def test_warp_specialized_forward_takes(dtype, shape, causal, scale, takes):
    # The problem rules of the Gluon forward's choice (the device and TMA checks need a GPU).
    assert ws_fits(dtype, *shape, causal, scale) is takes


def test_tma_addressable_layouts():
    x = torch.empty(2, 300, 3, 4, 64, dtype=torch.bfloat16)  # a fused QKV projection
    assert tma_addressable(x[:, :, 1].transpose(1, 2))
    assert tma_addressable(torch.empty(2, 4, 300, 64, dtype=torch.bfloat16))
    assert not tma_addressable(torch.empty(2, 4, 300, 68, dtype=torch.bfloat16)[..., :64])  # 136-byte rows
    flat = torch.empty(2 * 4 * 300 * 64 + 1, dtype=torch.bfloat16)
    assert not tma_addressable(flat[1:].view(2, 4, 300, 64))  # contiguous, but 2 bytes off alignment
    assert not tma_addressable(torch.empty(2, 4, 64, 300, dtype=torch.bfloat16).transpose(2, 3))



def _layout_qkv(b, hq, hkv, sq, skv, d, dtype, device, layout):
    """q, k, v in SDPA's (B, H, S, D) view: stored so ("bhsd"), as (B, S, H, D) ("bshd", HF's layout) or
    as one fused (B, S, 3, H, D) projection ("qkv", Sq = Skv, Hq = Hkv)."""
    if layout == "bhsd":
        return make_qkv(b, hq, hkv, sq, skv, d, dtype, device)
    if layout == "bshd":
        q = torch.randn(b, sq, hq, d, device=device).to(dtype).transpose(1, 2)
        k, v = (torch.randn(b, skv, hkv, d, device=device).to(dtype).transpose(1, 2) for _ in range(2))
        return q, k, v
    x = torch.randn(b, sq, 3, hq, d, device=device).to(dtype)
    return tuple(x[:, :, i].transpose(1, 2) for i in range(3))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape, layout", [
    ((1, 1, 1, 1, 1, 128), "bhsd"),           # one query, one key
    ((2, 4, 2, 127, 300, 128), "bshd"),       # ragged blocks, Sq < Skv, GQA
    ((2, 8, 2, 4096, 4095, 128), "bshd"),     # enough work for the launcher to choose the kernel
    ((1, 4, 1, 300, 17, 128), "bhsd"),        # Sq > Skv: rows past the keys see every key
    ((1, 2, 2, 4097, 4097, 128), "qkv"),      # fused projection views, a one-row last block
    ((1, 4, 1, 200, 4099, 64), "bshd"),       # D = 64 takes the kernel from 4096 keys on
], ids=str)
def test_warp_specialized_forward_gpu(device, shape, layout, causal, dtype):
    # The kernel itself at every shape (the launcher sends short query blocks elsewhere), then the routing.
    from trifuse.ops._launch import device_props

    if device_props(device.index or 0)[0] != (9, 0):
        pytest.skip("the warp-specialized forward is sm_90 only")
    b, hq, hkv, sq, skv, d = shape
    q, k, v = _layout_qkv(b, hq, hkv, sq, skv, d, dtype, device, layout)
    out = poison(torch.empty_like(q))
    lse = poison(torch.empty(q.shape[:3], device=device))
    scale = 1 / math.sqrt(d)
    routed = ws_applies(q, k, v, out, scale, causal)
    assert routed == (sq >= WS_MIN_SQ and attention_flops(b, hq, sq, skv, d, causal) >= WS_MIN_FLOPS)
    if routed:
        attention_fwd_into(q, k, v, out, lse, causal, scale)
    else:
        launch_fwd(q, k, v, out, lse, causal, scale)
    ref = attention_ref(q.double(), k.double(), v.double(), causal=causal, scale=scale)
    assert_close_to_ref(out, ref, sdpa(q, k, v, causal), floor=FLOOR[dtype])
    torch.testing.assert_close(lse.double(), attention_lse_ref(q, k, causal=causal, scale=scale), atol=1e-4,
                               rtol=1e-5)


@pytest.mark.gpu
def test_warp_specialized_forward_falls_back_where_it_cannot_run(device):
    # Head dims it does not take, fp32, a scale <= 0 and rows TMA cannot address still run (Triton kernel).
    cases = [(*make_qkv(1, 2, 2, 300, 300, 96, torch.bfloat16, device), 0.1),
             (*make_qkv(1, 2, 2, 300, 300, 128, torch.float32, device), 0.1),
             (*make_qkv(1, 2, 2, 300, 300, 128, torch.bfloat16, device), -0.1),
             (*(t[..., :128] for t in make_qkv(1, 2, 2, 300, 300, 132, torch.bfloat16, device)), 0.1)]
    for q, k, v, scale in cases:
        out = poison(torch.empty_like(q))
        lse = poison(torch.empty(q.shape[:3], device=device))
        assert not ws_applies(q, k, v, out, scale, True)
        attention_fwd_into(q, k, v, out, lse, True, scale)
        ref = attention_ref(q.double(), k.double(), v.double(), causal=True, scale=scale)
        assert_close_to_ref(out, ref, sdpa(q, k, v, True, scale, math=True), floor=FLOOR[q.dtype])
    # An output TMA cannot write (the kernel stores O with TMA): q, k, v qualify, out's rows are 132 apart.
    q, k, v = make_qkv(2, 8, 8, 4096, 4096, 128, torch.bfloat16, device)
    out = poison(torch.empty(2, 8, 4096, 132, dtype=q.dtype, device=device))[..., :128]
    lse = poison(torch.empty(q.shape[:3], device=device))
    assert ws_applies(q, k, v, torch.empty_like(q), 0.1, True) and not ws_applies(q, k, v, out, 0.1, True)
    attention_fwd_into(q, k, v, out, lse, True, 0.1)
    ref = attention_ref(q.double(), k.double(), v.double(), causal=True, scale=0.1)
    assert_close_to_ref(out, ref, sdpa(q, k, v, True, 0.1), floor=FLOOR[q.dtype])


@pytest.mark.parametrize("dtype, shape, causal, scale, takes", [
    (torch.bfloat16, (8, 16, 2048, 128, 16, 2048), True, 0.1, True),
    (torch.float16, (4, 16, 4096, 64, 2, 4096), False, 0.1, True),      # GQA, D = 64
    (torch.bfloat16, (8, 32, 2048, 64, 32, 2048), True, 0.1, True),     # D = 64 causal too (unlike the forward)
    (torch.float32, (8, 16, 2048, 128, 16, 2048), True, 0.1, False),
    (torch.bfloat16, (8, 16, 2048, 96, 16, 2048), False, 0.1, False),
    (torch.bfloat16, (8, 16, 2048, 128, 16, 2048), False, 0.0, False),
    (torch.bfloat16, (512, 16, 4096, 128, 16, 64), False, 0.1, False),  # fewer keys than a program holds
    (torch.bfloat16, (1, 16, 512, 128, 16, 512), True, 0.1, False),     # too small to pay for the launch
])
def test_warp_specialized_backward_takes(dtype, shape, causal, scale, takes):
    assert ows.ws_bwd_fits(dtype, *shape, causal, scale) is takes


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [True, "all"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape, layout", [
    ((1, 1, 1, 1, 1, 128), "bhsd"),           # one query, one key
    ((2, 4, 2, 127, 300, 128), "bshd"),       # odd Sq: LSE and delta rows padded to 16-byte coordinates
    ((1, 4, 1, 300, 17, 64), "bhsd"),         # Sq > Skv, MQA
    ((1, 8, 2, 1000, 1000, 64), "bshd"),      # GQA 4:1, ragged last blocks
    ((1, 2, 2, 4097, 4097, 128), "qkv"),      # fused projection views, a one-row last block
    ((1, 16, 2, 4096, 4095, 128), "bshd"),    # enough work for the launcher to choose the kernel
], ids=str)
def test_warp_specialized_backward_gpu(device, monkeypatch, shape, layout, causal, mode):
    # The Gluon dK/dV (mode True, the default) and the experimental dQ ("all") kernels at every shape (the
    # size floor lowered) against fp64 gradients, within twice SDPA's own bf16 error.
    from trifuse.ops._launch import device_props

    if device_props(device.index or 0)[0] != (9, 0):
        pytest.skip("the warp-specialized backward is sm_90 only")
    b, hq, hkv, sq, skv, d = shape
    q, k, v = _layout_qkv(b, hq, hkv, sq, skv, d, torch.bfloat16, device, layout)
    scale = 1 / math.sqrt(d)
    out, lse = torch.empty_like(q), torch.empty(q.shape[:3], device=device)
    attention_fwd_into(q, k, v, out, lse, causal, scale)
    do = torch.randn_like(q)
    dq, dk, dv = (poison(torch.empty_like(t)) for t in (q, k, v))
    fits = ows.ws_bwd_fits(torch.bfloat16, b, hq, sq, d, hkv, skv, causal, scale)
    assert ows.ws_bwd_applies(q, k, v, do, lse, dk, dv, scale, causal) == fits == (sq == 4096)
    monkeypatch.setattr(ows, "WS_BWD", mode)
    monkeypatch.setattr(ows, "WS_MIN_FLOPS", 0)
    monkeypatch.setattr(ows, "WS_MIN_SQ", 0)
    assert ows.ws_bwd_applies(q, k, v, do, lse, dk, dv, scale, causal)
    attention_bwd_into(do, q, k, v, out, lse, dq, dk, dv, causal, scale)
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref_g = torch.autograd.grad(sdpa(*ref_leaves, causal, scale, math=True), ref_leaves, do.double())
    torch_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    torch_g = torch.autograd.grad(sdpa(*torch_leaves, causal, scale), torch_leaves, do)
    for name, got, r, t in zip(("dq", "dk", "dv"), (dq, dk, dv), ref_g, torch_g):
        assert_close_to_ref(got, r, t, floor=FLOOR[torch.bfloat16], what=name)


def test_gluon_dkdv_head_split():
    # Causal GQA grids under WS_DKDV_TARGET_PROGRAMS split the group's heads; others never.
    target = ows.WS_DKDV_TARGET_PROGRAMS
    assert ows.ws_dkdv_split(8, target // 4, True) == 4
    assert ows.ws_dkdv_split(8, target // 3, True) == 4  # the smallest divisor of the group that reaches it
    assert ows.ws_dkdv_split(8, 1, True) == 8
    assert ows.ws_dkdv_split(6, target // 5, True) == 6
    assert ows.ws_dkdv_split(8, target // 4, False) == 1
    assert ows.ws_dkdv_split(8, target, True) == 1
    assert ows.ws_dkdv_split(1, 1, True) == 1
