"""The GEMM kernels' own logic and their choice: the pointer launcher, the persistent TMA kernel (also in the
interpreter), the epilogue slicing and loop flattening rules, and the warp-specialized Gluon kernel (GPU)."""
import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import trifuse
from gemm_cases import FLOOR, torch_gemm
from helpers import assert_close_to_ref, poison
from trifuse.kernels.activations import philox_wide
from trifuse.ops.gemm import ACTIVATIONS, EPI_NARROW_N, epi_split, flatten_loop, gemm_into
from trifuse.ops.gemm_configs import GemmConfig
from trifuse.ops.gemm_gluon import COOP_CONFIG, WS_CONFIG, coop_applies, ws_applies
from trifuse.reference.dropout import _philox4x32, keep_mask


def test_launcher_writes_every_element(device):
    a, b = torch.randn(70, 45, device=device), torch.randn(45, 33, device=device)
    for cfg in (GemmConfig("portable", 16, 16, 16, 2), GemmConfig("portable", 32, 64, 32, 4)):
        out, pre = poison(torch.empty(70, 33, device=device)), poison(torch.empty(70, 33, device=device))
        gemm_into(a, b, out, pre=pre, activation="gelu", config=cfg)
        ref = a.double() @ b.double()
        assert_close_to_ref(pre, ref, floor=1e-5, what="pre")
        assert_close_to_ref(out, F.gelu(ref), floor=1e-5)


@pytest.mark.parametrize("layout", ["nn", "nt", "tn", "tt"])
def test_tma_kernel_logic(device, layout):
    # The persistent descriptor kernel runs in the interpreter too (one program walks every tile): its
    # transposed-operand reads, both epilogue forms and the dropout mask are checked here; speed and
    # compilation on sm_90 are for the GPU tests.
    if device.type == "cuda" and torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("needs sm_90")
    m, k, n = 96, 80, 72
    a = torch.randn(m, k, device=device) if layout[0] == "n" else torch.randn(k, m, device=device).t()
    b = torch.randn(k, n, device=device) if layout[1] == "n" else torch.randn(n, k, device=device).t()
    a, b = a.half(), (b / 8).half()
    bias, res = torch.randn(n, device=device).half(), torch.randn(m, n, device=device).half()
    seed = torch.tensor([5], device=device)
    ref = F.gelu(a.double() @ b.double() + bias.double()) + res.double()
    # Tiles 32 wide (whole or in halves), and 128 and 256 wide: with dropout, pre or a residual the
    # epilogue then runs on 4 and 8 column slices of 32 (ops.gemm.epi_split), past N's edge here.
    configs = [GemmConfig("tma", 32, 32, 16, 2, 4, 1, epi_subtile=sub) for sub in (False, True)]
    configs += [GemmConfig("tma", 32, 128, 16, 2, 4, 1), GemmConfig("tma", 32, 256, 16, 2, 4, 1)]
    for cfg in configs:
        out, pre = poison(torch.empty(m, n, device=device).half()), poison(torch.empty(m, n, device=device).half())
        gemm_into(a, b, out, bias=bias, pre=pre, residual=res, activation="gelu", config=cfg)
        assert_close_to_ref(out, ref, floor=2e-3)
        assert_close_to_ref(pre, a.double() @ b.double() + bias.double(), floor=2e-3, what="pre")
        drop_tma, drop_ptr = torch.empty_like(out), torch.empty_like(out)
        gemm_into(a, b, drop_tma, bias=bias, seed=seed, activation="silu", dropout_p=0.3, config=cfg)
        gemm_into(a, b, drop_ptr, bias=bias, seed=seed, activation="silu", dropout_p=0.3,
                  config=GemmConfig("portable", 16, 64, 16, 2, 4, 1))
        assert torch.equal(drop_tma == 0, drop_ptr == 0)
        torch.testing.assert_close(drop_tma, drop_ptr)


def test_epilogue_slices():
    whole, halves = GemmConfig("tma", 128, 256, 64, 8, 8, 3), GemmConfig("tma", 128, 256, 64, 8, 8, 3, epi_subtile=True)
    assert epi_split(whole, False, "silu") == 1
    assert epi_split(halves, False, "silu") == 2
    assert epi_split(whole, False, "gelu") == 2  # a whole tile of erf spilled registers
    assert epi_split(whole, True, "silu") == 256 // EPI_NARROW_N


def test_flatten_kept_only_for_light_epilogues():
    # A flattened persistent loop made GELU and the narrow-slice epilogues 1.3-1.4x slower (ops.gemm).
    flat = GemmConfig("tma", 128, 256, 64, 8, 8, 3, epi_subtile=True, flatten=True)
    assert flatten_loop(flat, "silu", narrow=False)
    assert flatten_loop(flat, "none", narrow=False)
    assert not flatten_loop(flat, "gelu", narrow=False)
    assert not flatten_loop(flat, "silu", narrow=True)
    assert not flatten_loop(GemmConfig("tma", 128, 256, 64, 8, 8, 3), "silu", narrow=False)


# ---- GPU ------------------------------------------------------------------------------------------------

def _uses(kind):
    from trifuse.ops.gemm import choose_config

    def pick(a, b):
        out = torch.empty(a.shape[0], b.shape[1], device=a.device, dtype=a.dtype)
        return choose_config(a, b, out).kernel == kind
    return pick


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_large_half_precision_gpu(device, activation, dtype):
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    w = torch.randn(4096, 4096, device=device, dtype=dtype) / 64
    bias = torch.randn(4096, device=device, dtype=dtype)
    b = w.t()
    if torch.cuda.get_device_capability()[0] == 9:
        assert _uses("tma")(a, b), "the TMA kernel should be selected for 4096^3 on sm_90"
    out = trifuse.gemm(a, b, bias, activation=activation)
    ref = torch_gemm(a.double(), b.double(), bias.double(), activation)
    theirs = torch_gemm(a, b, bias, activation)
    assert_close_to_ref(out, ref, theirs, floor=FLOOR[dtype])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
                    reason="needs sm_90")
@pytest.mark.parametrize("layout", ["nn", "nt", "tn", "tt"])
def test_tma_matches_portable_gpu(device, layout):
    m, k, n = 1000, 768, 1536
    a = torch.randn(m, k, device=device, dtype=torch.bfloat16) if layout[0] == "n" else \
        torch.randn(k, m, device=device, dtype=torch.bfloat16).t()
    b = torch.randn(k, n, device=device, dtype=torch.bfloat16) if layout[1] == "n" else \
        torch.randn(n, k, device=device, dtype=torch.bfloat16).t()
    b = b / 32
    bias, seed = torch.randn(n, device=device, dtype=torch.bfloat16), torch.tensor([5], device=device)
    outs = []
    for cfg in (GemmConfig("tma", 128, 256, 64, 8, 8, 3, epi_subtile=True), GemmConfig("tma", 128, 128, 64, 8, 8, 4),
                GemmConfig("portable", 128, 128, 64, 8, 8, 3)):
        out, pre = torch.empty(m, n, device=device, dtype=torch.bfloat16), torch.empty(m, n, device=device,
                                                                                        dtype=torch.bfloat16)
        gemm_into(a, b, out, bias=bias, pre=pre, seed=seed, activation="silu", dropout_p=0.1, config=cfg)
        outs.append((out, pre))
    for out, pre in outs[:2]:
        torch.testing.assert_close(out, outs[2][0], atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(pre, outs[2][1], atol=2e-2, rtol=2e-2)
        assert torch.equal(out == 0, outs[2][0] == 0)  # the same dropout mask


def test_ws_kernel_choice():
    # Where the warp-specialized kernel takes over the TMA kernel's launch (measurements at WS_CONFIG).
    tma = GemmConfig("tma", 128, 256, 64, 8, 8, 3)
    assert ws_applies(tma, 4096, 4096, 4096, "gelu", False, False)
    assert ws_applies(tma, 4096, 4096, 4096, "silu", False, False)
    assert ws_applies(tma, 16384, 4096, 4096, "gelu", False, False)
    assert not ws_applies(tma, 16384, 4096, 4096, "silu", False, False)  # the cooperative kernel's
    assert not ws_applies(tma, 16384, 4096, 4096, "gelu_tanh", False, False)
    assert ws_applies(tma, 4200, 4096, 4000, "gelu_tanh", False, False)  # N < 4096: no cooperative kernel
    assert not ws_applies(tma, 4096, 4096, 2048, "gelu_tanh", False, False)  # under WS_MIN_WORK
    assert not ws_applies(tma, 4096, 4096, 4096, "none", False, False)  # bare: the 128x256 tiles win
    assert not ws_applies(tma, 8192, 8192, 8192, "gelu", False, False)
    assert not ws_applies(tma, 8192, 14336, 4096, "silu", False, False)
    assert not ws_applies(tma, 8192, 4096, 14336, "silu", False, False)
    assert not ws_applies(tma, 2048, 2048, 2048, "silu", False, False)  # its launch's host time
    assert not ws_applies(tma, 4096, 4096, 4096, "silu", True, False)  # a residual or stored pre
    assert not ws_applies(tma, 4096, 4096, 4096, "silu", True, False, dropout=True)
    assert ws_applies(tma, 4096, 4096, 4096, "silu", False, False, dropout=True)  # SiLU dropout, N, K <= 4096
    assert ws_applies(tma, 16384, 4096, 4096, "silu", False, False, dropout=True)
    assert not ws_applies(tma, 4096, 4096, 2048, "silu", False, False, dropout=True)
    assert not ws_applies(tma, 8192, 8192, 8192, "silu", False, False, dropout=True)
    assert not ws_applies(tma, 4096, 4096, 4096, "gelu", False, False, dropout=True)
    assert not ws_applies(tma, 4096, 4096, 4096, "none", False, False, dropout=True)
    assert not ws_applies(tma, 2048, 2048, 2048, "silu", False, False, dropout=True)
    assert not ws_applies(tma, 4096, 4096, 4096, "silu", False, True)  # a stored transposed
    assert not ws_applies(tma, 4096, 4096, 4096, "silu", False, False, traced=True)
    assert not ws_applies(GemmConfig("portable", 64, 64, 64), 4096, 4096, 4096, "silu", False, False)


def test_coop_kernel_choice():
    # Where the cooperative kernel takes the TMA kernel's launch (ws_applies first).
    tma = GemmConfig("tma", 128, 256, 64, 8, 8, 3)
    for activation in ("none", "silu", "gelu", "gelu_tanh"):
        assert coop_applies(tma, 8192, 8192, 8192, activation, False, False)
        assert coop_applies(tma, 8192, 14336, 4096, activation, False, False)
    assert coop_applies(tma, 4096, 4096, 4096, "none", False, False)
    assert not coop_applies(tma, 8192, 8192, 8192, "relu", False, False)  # a tie with the Triton kernel
    assert not coop_applies(tma, 8192, 8192, 8192, "silu", False, False, dropout=True)  # a tie, at best
    assert not coop_applies(tma, 8192, 8192, 8192, "silu", True, False)  # a residual or stored pre
    assert not coop_applies(tma, 8192, 8192, 8192, "silu", False, True)  # a stored transposed
    assert not coop_applies(tma, 8192, 8192, 8192, "silu", False, False, traced=True)
    assert not coop_applies(tma, 2048, 8192, 8192, "silu", False, False)  # measured at M, N, K >= 4096 only
    assert not coop_applies(tma, 8192, 8192, 2048, "silu", False, False)
    assert not coop_applies(GemmConfig("portable", 64, 64, 64), 8192, 8192, 8192, "silu", False, False)


@pytest.mark.gpu
@pytest.mark.parametrize("config", [WS_CONFIG, COOP_CONFIG], ids=["ws", "coop"])
@pytest.mark.parametrize("b_transposed", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_ws_kernel_gpu(device, activation, dtype, b_transposed, config):
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the warp-specialized Gluon kernels are sm_90 only")
    # One tile; ragged tiles; more tiles than programs (both consumer warpgroups, the ring wrapping), several
    # tiles a program over a short K (loads running ahead into the next tile).
    for m, k, n in [(128, 64, 128), (1000, 328, 712), (2056, 1024, 2048), (3000, 200, 3000)]:
        a = torch.randn(m, k, device=device, dtype=dtype)
        w = (torch.randn(n, k, device=device) / k ** 0.5).to(dtype)
        b = w.t() if b_transposed else w.t().contiguous()
        bias = torch.randn(n, device=device, dtype=dtype) if m > 128 else None
        out = poison(torch.empty(m, n, device=device, dtype=dtype))
        gemm_into(a, b, out, bias=bias, activation=activation, config=config)
        ref = torch_gemm(a.double(), b.double(), None if bias is None else bias.double(), activation)
        theirs = torch_gemm(a, b, bias, activation)
        assert_close_to_ref(out, ref, theirs, floor=FLOOR[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_ws_sized_call_with_another_out_dtype_gpu(device, out_dtype):
    """A call the Gluon kernel would take (bf16 bias+SiLU at 4096^3) with an out of another dtype: that kernel
    stages the output in the operands' dtype, so the call takes the Triton kernel (it failed to compile
    before); an explicit Gluon config with such an out is a clear error."""
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the warp-specialized Gluon kernels are sm_90 only")
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    w = (torch.randn(4096, 4096, device=device) / 64).to(torch.bfloat16)
    bias = torch.randn(4096, device=device, dtype=torch.bfloat16)
    y = trifuse.gemm(a, w.t(), bias, activation="silu", out_dtype=out_dtype)
    assert y.dtype == out_dtype
    ref = torch_gemm(a.double(), w.t().double(), bias.double(), "silu")
    assert_close_to_ref(y, ref, torch_gemm(a, w.t(), bias, "silu").to(out_dtype), floor=FLOOR[torch.bfloat16])
    with pytest.raises(ValueError, match="out of a's dtype"):
        gemm_into(a, w.t(), torch.empty(4096, 4096, device=device, dtype=out_dtype), bias=bias, activation="silu",
                  config=WS_CONFIG)


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["none", "silu", "gelu"])
@pytest.mark.parametrize("p,seed", [(0.1, 3), (0.5, 2**40 + 7)])
def test_ws_kernel_dropout_gpu(device, activation, p, seed):
    # The Gluon kernel's dropout (kernels/gemm_ws._dropout) draws its own Philox words in the wgmma layout:
    # its mask must be reference.dropout's bit for bit (the Triton backward recomputes it from the seed), and
    # its output the Triton kernel's.
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the warp-specialized Gluon kernel is sm_90 only")
    seed_t = torch.tensor([seed], device=device)
    for m, k, n in [(128, 64, 128), (1000, 328, 712), (2056, 1024, 2048)]:
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = (torch.randn(n, k, device=device) / k ** 0.5).to(torch.bfloat16).t()
        bias = torch.randn(n, device=device, dtype=torch.bfloat16)
        outs = {}
        for name, cfg in (("ws", WS_CONFIG), ("coop", COOP_CONFIG), ("tma", GemmConfig("tma", 128, 256, 64, 8, 8, 3))):
            outs[name] = poison(torch.empty(m, n, device=device, dtype=torch.bfloat16))
            gemm_into(a, b, outs[name], bias=bias, seed=seed_t, activation=activation, dropout_p=p,
                      config=cfg)
        full = torch_gemm(a.double(), b.double(), bias.double(), activation)
        keep = keep_mask(seed, m, n, p, device)
        assert torch.equal(outs["ws"] != 0, keep & (full != 0))
        assert torch.equal(outs["tma"] != 0, keep & (full != 0))  # the Triton kernel's mask too
        assert torch.equal(outs["coop"] != 0, keep & (full != 0))
        assert_close_to_ref(outs["coop"], torch.where(keep, full / (1 - p), 0.0), outs["tma"].double(),
                            floor=FLOOR[torch.bfloat16])
        assert_close_to_ref(outs["ws"], torch.where(keep, full / (1 - p), 0.0), outs["tma"].double(),
                            floor=FLOOR[torch.bfloat16])


@triton.jit
def _philox_words(seed_ptr, out_wide_ptr, out_tl_ptr, R: tl.constexpr, C: tl.constexpr):
    seed = tl.load(seed_ptr)
    c0 = (tl.arange(0, C)[None, :] * 977 + tl.zeros([R, C], tl.int32)).to(tl.uint32)
    c1 = (tl.arange(0, R)[:, None] * 2654435 + tl.zeros([R, C], tl.int32)).to(tl.uint32)
    offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    wide = philox_wide(seed, c0, c1)
    ref = tl.philox(seed, c0, c1, c0 * 0, c0 * 0)
    for i in tl.static_range(4):
        tl.store(out_wide_ptr + i * R * C + offs, wide[i].to(tl.int32, bitcast=True))
        tl.store(out_tl_ptr + i * R * C + offs, ref[i].to(tl.int32, bitcast=True))


@pytest.mark.parametrize("seed", [0, 1234, 2**40 + 7, 2**63 - 1])
def test_philox_wide_matches_tl_philox(device, seed):
    """philox_wide (one wide multiply a round, the TMA epilogue's dropout) gives tl.philox's words bit for bit,
    and both the plain-torch Philox of reference.dropout, over counters spanning the 32-bit range."""
    R, C = 16, 32
    seed_t = torch.tensor([seed], device=device)
    outs = [torch.full((4, R, C), -1, device=device, dtype=torch.int32) for _ in range(2)]
    _philox_words[(1,)](seed_t, outs[0], outs[1], R, C)
    assert torch.equal(outs[0], outs[1])
    c0 = (torch.arange(C, dtype=torch.int64) * 977).expand(R, C)
    c1 = (torch.arange(R, dtype=torch.int64)[:, None] * 2654435).expand(R, C)
    zero = torch.zeros(R, C, dtype=torch.int64)
    words = _philox4x32(c0, c1, zero, zero, seed & 0xFFFFFFFF, seed >> 32)
    expect = torch.stack([w & 0xFFFFFFFF for w in words]).to(torch.uint32).view(torch.int32)
    assert torch.equal(outs[0].cpu(), expect)
