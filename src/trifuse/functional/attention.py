"""trifuse.attention: flash attention with SDPA's layout and semantics (causal, GQA/MQA, any length)."""
from __future__ import annotations

import math
import numbers

import torch

from .._checks import check_float, check_ndim, check_same_dtype, check_tensor
from ..library.attention import attention_fwd
from ..ops.attention import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS
from ..runtime import check_kernel_device

NAME = "attention"


def _validate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal, scale) -> float:
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
    if not isinstance(causal, bool):
        raise TypeError(f"trifuse.{NAME}: causal must be a bool, got {type(causal).__name__}")
    if scale is None:
        return 1.0 / math.sqrt(D)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"trifuse.{NAME}: scale must be a float or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"trifuse.{NAME}: scale must be finite, got {scale}")
    return scale


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
    scale = _validate(q, k, v, causal, scale)
    check_kernel_device(NAME, q, k, v)
    out, _ = attention_fwd(q, k, v, causal, scale)
    return out


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                       scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """attention() and the natural-log LSE per query row, (B, Hq, Sq) fp32 (not differentiable)."""
    scale = _validate(q, k, v, causal, scale)
    check_kernel_device(NAME, q, k, v)
    return attention_fwd(q, k, v, causal, scale)
