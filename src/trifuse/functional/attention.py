"""trifuse.attention: flash attention with SDPA's layout and semantics (causal, GQA/MQA, any length)."""
from __future__ import annotations

import math
import numbers

import torch

from .._checks import PLAIN_TENSORS, check_bool, check_float, check_ndim, check_same_dtype, check_tensor
from ..library.attention import attention_fwd
from ..ops.attention import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS
from ..runtime import check_kernel_device, kernel_devices_ok

NAME = "attention"


def _default_scale(head_dim) -> float:
    return 1.0 / math.sqrt(head_dim)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal, scale) -> float:
    """Every check of the user's input, each raising its typed error; returns the softmax scale."""
    for arg, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(NAME, arg, t)
        check_ndim(NAME, arg, t, 4)
        check_float(NAME, arg, t, SUPPORTED_DTYPES)
    check_same_dtype(NAME, q=q, k=k, v=v)
    B, Hq, _Sq, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"trifuse.{NAME}: k and v must have one shape (B, Hkv, Skv, D), "
                         f"got k {tuple(k.shape)} and v {tuple(v.shape)}")
    Bk, Hkv, _Skv, Dk = k.shape
    if Bk != B:
        raise ValueError(f"trifuse.{NAME}: k/v batch must equal q's batch {B}, got {Bk}")
    if Dk != D:
        raise ValueError(f"trifuse.{NAME}: k/v head dim must equal q's head dim {D}, got {Dk}")
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"trifuse.{NAME}: head dim must be one of {SUPPORTED_HEAD_DIMS}, got {D}")
    if (Hkv == 0 and Hq != 0) or (Hkv != 0 and Hq % Hkv != 0):
        raise ValueError(f"trifuse.{NAME}: q heads ({Hq}) must be a multiple of k/v heads, got {Hkv} k/v heads")
    check_bool(NAME, "causal", causal)  # the callers pass bool(causal) on
    if scale is None:
        scale = _default_scale(D)
    else:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"trifuse.{NAME}: scale must be a float or None, got {type(scale).__name__}")
        scale = float(scale)
        if not math.isfinite(scale):
            raise ValueError(f"trifuse.{NAME}: scale must be finite, got {scale}")
    check_kernel_device(NAME, q, k, v)
    return scale


def _valid(q, k, v, causal, scale) -> bool:
    """True only when every check of _check passes and scale is None or a finite float: the common eager
    call in one pass. False sends the call through _check, which raises the typed error or passes."""
    if type(q) not in PLAIN_TENSORS or type(k) not in PLAIN_TENSORS or type(v) not in PLAIN_TENSORS:
        return False
    dtype = q.dtype
    if dtype not in SUPPORTED_DTYPES or k.dtype is not dtype or v.dtype is not dtype:
        return False
    if type(causal) is not bool:
        return False
    if scale is not None and (type(scale) is not float or not math.isfinite(scale)):
        return False
    q_shape, k_shape = q.shape, k.shape
    if len(q_shape) != 4 or len(k_shape) != 4 or v.shape != k_shape:
        return False
    B, Hq, _Sq, D = q_shape
    Bk, Hkv, _Skv, Dk = k_shape
    if Bk != B or Dk != D or D not in SUPPORTED_HEAD_DIMS or Hkv == 0 or Hq % Hkv != 0:
        return False
    return kernel_devices_ok(q, k, v)


def _scale(q, k, v, causal, scale) -> float:
    """The softmax scale, once every check passed: the one-pass _valid for the common eager call, the
    full checks (typed errors) when it fails or under torch.compile."""
    if torch.compiler.is_compiling() or not _valid(q, k, v, causal, scale):
        return _check(q, k, v, causal, scale)
    return scale if scale is not None else _default_scale(q.shape[3])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention, flash style (O(S) memory), forward and backward.

    q (B, Hq, Sq, D), k and v (B, Hkv, Skv, D) with Hq a multiple of Hkv; returns (B, Hq, Sq, D) in q's
    dtype. Matches `F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
    enable_gqa=True)`, including its top-left causal alignment when Sq != Skv (query i sees keys j <= i;
    with Skv >= 1 every row sees key 0, so no row is empty; Skv = 0 gives zeros, as SDPA's math does).
    Head dims 32, 64, 96, 128, 256; fp16 and bf16 (fp32 runs with exact fp32 dots: correct, not fast).
    Any strides with no copy, e.g. q, k, v = qkv.view(B, S, 3, H, D).permute(2, 0, 3, 1, 4).
    The backward is deterministic (no atomics).
    """
    sm_scale = _scale(q, k, v, causal, scale)  # checks causal before bool() takes a numpy bool
    out, _ = attention_fwd(q, k, v, bool(causal), sm_scale)
    return out


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                       scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """attention() and the natural-log LSE per query row, (B, Hq, Sq) fp32 (not differentiable)."""
    sm_scale = _scale(q, k, v, causal, scale)
    return attention_fwd(q, k, v, bool(causal), sm_scale)
