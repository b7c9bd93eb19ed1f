"""The one-pass input checks (`_valid`) of the eager fast path never accept what the full checks
(`_check`, with their typed errors) reject: random mixes of good and bad arguments for every op.

`_valid` returning False is always safe (the call then goes through `_check`); `_valid` returning True
for an input `_check` rejects would let bad input reach a kernel. No kernel runs here.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trifuse.functional import attention as fa
from trifuse.functional import gemm as fg
from trifuse.functional import norm as fn
from trifuse.functional import softmax as fs

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32]
SETTINGS = settings(max_examples=300, deadline=None)


def tensors(shapes, dtypes=DTYPES, extra=(None,)):
    """A tensor of one of the shapes and dtypes (a few on the meta device, one non-contiguous), or an
    extra non-tensor value."""
    def make(shape, dtype, where):
        if where == "meta":
            return torch.empty(shape, dtype=dtype, device="meta")
        t = torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.ones(shape, dtype=dtype)
        return t.t() if where == "transposed" and t.dim() == 2 else t
    tensor = st.builds(make, st.sampled_from(shapes), st.sampled_from(dtypes),
                       st.sampled_from(["cpu", "cpu", "cpu", "transposed", "meta"]))
    return st.one_of(tensor, st.sampled_from(list(extra))) if extra else tensor


def accepted(check, *args) -> bool:
    try:
        check(*args)
    except (TypeError, ValueError):
        return False
    return True


FLOATS = [torch.float32, torch.float16, torch.bfloat16]


def near_valid(data, good: dict, anything: dict) -> dict:
    """A consistent, valid set of arguments with up to two of them replaced by anything (often invalid):
    the inputs where a one-pass check could be too loose."""
    args = dict(good)
    for name in data.draw(st.lists(st.sampled_from(sorted(anything)), max_size=2, unique=True)):
        args[name] = data.draw(anything[name])
    return args


def rand(*shape, dtype=torch.float32, transposed=False):
    t = torch.randn(*reversed(shape)).t() if transposed and len(shape) == 2 else torch.randn(*shape)
    return t.to(dtype)


GEMM_ANY = {
    "a": tensors([(4, 8), (2, 4, 8), (8,), (), (4, 9), (0, 8)], extra=(None, [1.0])),
    "b": tensors([(8, 6), (9, 6), (8,), (8, 6, 1), (6, 8)], extra=(None,)),
    "bias": tensors([(6,), (5,), (6, 1)]),
    "residual": tensors([(4, 6), (2, 4, 6), (4, 5), (6, 4), (0, 6)]),
    "activation": st.sampled_from(["silu", "relu", "gelu", "none", "swish", None, 3]),
    "dropout_p": st.sampled_from([0.0, 0.1, 0.999, 1.0, -0.1, math.nan, 0, True, "0.1"]),
    "out_dtype": st.sampled_from([None, torch.float32, torch.float16, torch.bfloat16, torch.int32, "fp32"]),
}


@SETTINGS
@given(st.data(), st.sampled_from(FLOATS), st.sampled_from([(4,), (2, 4), (0,)]), st.booleans(),
       st.booleans())
def test_gemm_fast_check_is_never_looser(data, dtype, batch, transposed, with_residual):
    good = {"a": rand(*batch, 8, dtype=dtype), "b": rand(8, 6, dtype=dtype, transposed=transposed),
            "bias": rand(6, dtype=dtype), "residual": rand(*batch, 6, dtype=dtype) if with_residual else None,
            "activation": "silu", "dropout_p": 0.1, "out_dtype": None}
    args = near_valid(data, good, GEMM_ANY)
    if fg._valid(**args):
        assert accepted(fg._check, "gemm", "a", "b", *args.values())


NORM_ANY = {
    "x": tensors([(4, 8), (2, 3, 8), (8,), (), (0, 8), (4, 7)], extra=(None, 1.0)),
    "residual": tensors([(4, 8), (2, 3, 8), (4, 7), (8,)]),
    "weight": tensors([(8,), (7,), (8, 1), ()]),
    "bias": tensors([(8,), (7,)]),
    "input_bias": tensors([(8,), (1, 8)]),
    "eps": st.sampled_from([1e-5, 0.0, None, 0, 1, -1e-5, math.nan, math.inf, True, "1e-5"]),
}


@SETTINGS
@given(st.data(), st.sampled_from(FLOATS), st.sampled_from([(4,), (2, 3), (0,), ()]))
def test_norm_fast_check_is_never_looser(data, dtype, lead):
    good = {"x": rand(*lead, 8, dtype=dtype), "residual": rand(*lead, 8, dtype=dtype),
            "weight": rand(8, dtype=torch.float32), "bias": rand(8, dtype=dtype),
            "input_bias": rand(8, dtype=dtype), "eps": 1e-5}
    args = near_valid(data, good, NORM_ANY)
    if fn._valid(**args):
        assert accepted(fn._check, "add_layer_norm", *args.values())
        assert fn._check("add_layer_norm", *args.values()) == args["eps"]


@SETTINGS
@given(x=tensors([(4, 8), (2, 3, 8), (8,), (), (0, 5)], extra=(None, [1.0])),
       dim=st.sampled_from([0, 1, 2, -1, -2, -3, 3, 5, True, 1.0, None]))
def test_softmax_fast_check_is_never_looser(x, dim):
    if fs._valid(x, dim):
        assert accepted(fs._check, "softmax", x, dim)


def qkv(shapes):
    return tensors(shapes, [torch.float16, torch.bfloat16, torch.float32, torch.int32], extra=(None,))


ATTENTION_ANY = {
    "q": qkv([(1, 4, 5, 32), (1, 4, 5, 48), (1, 4, 5), (2, 4, 5, 32), (1, 0, 5, 32), (1, 4, 0, 64)]),
    "k": qkv([(1, 2, 7, 32), (1, 3, 7, 32), (1, 0, 7, 32), (2, 2, 7, 32), (1, 2, 7, 64), (1, 4, 0, 64)]),
    "v": qkv([(1, 2, 7, 32), (1, 2, 7, 64), (1, 2, 6, 32), (1, 4, 0, 64)]),
    "causal": st.sampled_from([True, False, 1, None]),
    "scale": st.sampled_from([None, 0.125, 2.0, math.nan, math.inf, 1, True, "0.1"]),
}


@SETTINGS
@given(st.data(), st.sampled_from([torch.float16, torch.bfloat16, torch.float32]), st.sampled_from([1, 2, 4]),
       st.sampled_from([32, 64, 96]))
def test_attention_fast_check_is_never_looser(data, dtype, hkv, d):
    good = {"q": rand(1, 4, 5, d, dtype=dtype), "k": rand(1, hkv, 7, d, dtype=dtype),
            "v": rand(1, hkv, 7, d, dtype=dtype), "causal": True, "scale": None}
    args = near_valid(data, good, ATTENTION_ANY)
    if fa._valid(**args):
        assert accepted(fa._check, *args.values())
        assert fa._check(*args.values()) == fa._scale(*args.values())


@pytest.mark.parametrize("valid, make", [
    (fg._valid, lambda dev: (torch.randn(4, 8, device=dev), torch.randn(8, 6, device=dev),
                             torch.randn(6, device=dev), torch.randn(4, 6, device=dev), "silu", 0.1, None)),
    (fn._valid, lambda dev: (torch.randn(4, 8, device=dev), torch.randn(4, 8, device=dev),
                             torch.randn(8, device=dev), torch.randn(8, device=dev), None, 1e-5)),
    (fs._valid, lambda dev: (torch.randn(4, 8, device=dev), -1)),
    (fa._valid, lambda dev: (torch.randn(1, 4, 5, 32, device=dev).half(), torch.randn(1, 2, 7, 32, device=dev).half(),
                             torch.randn(1, 2, 7, 32, device=dev).half(), True, None)),
])
def test_common_calls_take_the_fast_path(device, valid, make):
    # The properties above would hold vacuously if _valid never said yes: the common call must, on the
    # device the kernels run on (CPU tensors in the interpreter, CUDA tensors on a GPU).
    assert valid(*make(device))
