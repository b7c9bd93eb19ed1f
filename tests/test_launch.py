"""The launch fast path (ops/_launch.py): its key must never be coarser than Triton's specialization."""
from types import SimpleNamespace

import pytest
import torch

from helpers import poison
from trifuse.kernels import softmax as ks
from trifuse.ops._launch import _UNKNOWN, FastKernel, _arg_key, cdiv, next_pow2


def test_arg_key_follows_triton_specialization():
    assert _arg_key(1) == 1  # Triton makes 1 a constant
    assert _arg_key(32) != _arg_key(33)  # 16-divisibility hint
    assert _arg_key(2**31 + 16) != _arg_key(32)  # i64 against i32
    assert _arg_key(-16) == _arg_key(32)
    assert _arg_key(0.5) is float and _arg_key(True) is bool and _arg_key(None) is type(None)
    t = torch.zeros(64)
    assert _arg_key(t) == (torch.float32, True)
    assert _arg_key(t[1:]) == (torch.float32, False)  # 4 bytes off a 16-byte boundary
    assert _arg_key(t.half()) != _arg_key(t)
    assert _arg_key("silu") is _UNKNOWN and _arg_key((1, 2)) is _UNKNOWN  # Triton's own path


def test_arg_key_of_a_host_tensor_descriptor_follows_its_mangled_type():
    # Triton specializes a descriptor on dtype, block shape and layout only (mangle_type), not on the
    # base's address, shape or strides, which the launcher reads on every launch: the key must separate
    # exactly what mangle_type separates.
    pytest.importorskip("triton.experimental.gluon")
    from triton.runtime.jit import mangle_type

    from trifuse.ops._gluon import descriptor

    t = torch.empty(2, 4, 256, 128, dtype=torch.bfloat16)
    same = [descriptor(t, (1, 1, 64, 128)), descriptor(t[:1, :, 8:], (1, 1, 64, 128)),
            descriptor(torch.empty(3, 2, 100, 128, dtype=torch.bfloat16), (1, 1, 64, 128))]
    other = [descriptor(t, (1, 1, 128, 128)), descriptor(t.half(), (1, 1, 64, 128)),
             descriptor(t[..., :64], (1, 1, 64, 64))]
    for d in same[1:]:
        assert _arg_key(d) == _arg_key(same[0]) and mangle_type(d) == mangle_type(same[0])
    for d in other:
        assert _arg_key(d) != _arg_key(same[0]) and mangle_type(d) != mangle_type(same[0])
    assert len({_arg_key(d) for d in other}) == len(other)


def _fake_kernel(n_params, constexprs):
    params = [SimpleNamespace(name=f"p{i}", default=None) for i in range(n_params)]
    return SimpleNamespace(params=params, constexprs=constexprs)


def test_fast_key_is_per_argument_specialization():
    fast = FastKernel(_fake_kernel(6, [5]))
    t = torch.zeros(64)
    args = (t, t[1:], 1, 48, 2**40, 0.5)
    key = fast._key(args[:5], {"BLOCK": 64, "num_warps": 4})
    assert key == ((("BLOCK", 64), ("num_warps", 4)), *map(_arg_key, args[:5]))
    assert fast._key((t, "silu"), {}) is None  # unknown type: Triton's own path
    # A constexpr passed by position is keyed on its value, not on its int specialization.
    assert fast._key((*args[:5], 64), {}) != fast._key((*args[:5], 32), {})


def test_helpers():
    assert [next_pow2(n) for n in (0, 1, 2, 3, 1000, 1024)] == [1, 1, 2, 4, 1024, 1024]
    assert [cdiv(a, 4) for a in (0, 1, 4, 5)] == [0, 1, 1, 2]


def _launch(kernel, x, y, log):
    m, n = x.shape
    kernel[(cdiv(m, 2),)](x, y, m, n, x.stride(0), x.stride(1), y.stride(0),
                          LOG=log, BLOCK_M=2, BLOCK_N=next_pow2(n), num_warps=2)


@pytest.mark.gpu
def test_fast_kernel_respecializes(device):
    """Alternate alignments, dtypes, strides equal to 1 and constexprs through one FastKernel: every
    launch must match torch, so no cached kernel is reused for arguments Triton would compile apart."""
    fast = FastKernel(ks.softmax_fwd_rows)
    base = torch.randn(4 * 37 * 33 + 1, device=device)
    cases = [
        (base[: 37 * 32].view(37, 32), False),  # aligned, stride 32 (divisible by 16)
        (base[1: 1 + 37 * 32].view(37, 32), False),  # misaligned pointer
        (base[: 37 * 33].view(37, 33), True),  # odd stride
        (base[: 37 * 32].view(32, 37).t(), False),  # column stride 32, row stride 1
        (base[: 37 * 32].view(37, 32).half(), True),
        (base[: 37 * 32].view(37, 32), True),
    ]
    for _ in range(2):  # second round: every key is a cache hit
        for x, log in cases:
            y = poison(torch.empty(x.shape, dtype=x.dtype, device=device))
            _launch(fast, x, y, log)
            ref = (torch.log_softmax if log else torch.softmax)(x.double(), -1)
            tol = 1e-3 if x.dtype == torch.float16 else 1e-5
            torch.testing.assert_close(y.double(), ref, atol=tol, rtol=tol)
    assert len(fast.cache) == len(cases)


@pytest.mark.parametrize("hip", [None, "6.4"])
def test_device_props_hides_rocm_capability(monkeypatch, hip):
    # ROCm reports gfx9 parts (MI200 / MI300) as capability 9.x: the sm_90 paths (TMA, Gluon, PDL) must not
    # see it, so a ROCm build gets capability (0, 0) and the portable kernels.
    from trifuse.ops._launch import device_props

    props = SimpleNamespace(major=9, minor=4, multi_processor_count=304)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.version, "hip", hip)
    want = ((9, 4) if hip is None else (0, 0), 304)
    assert device_props.__wrapped__(0) == want
