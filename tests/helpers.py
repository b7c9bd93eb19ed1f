"""Test helpers: poisoned outputs, and tolerances taken from PyTorch's own low-precision error."""
from __future__ import annotations

import torch


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN so any element a kernel failed to write shows up."""
    return t.fill_(float("nan"))


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())


def assert_close_to_ref(out: torch.Tensor, ref: torch.Tensor, torch_out: torch.Tensor | None = None,
                        *, factor: float = 2.0, floor: float = 1e-6, what: str = "output") -> None:
    """out must be within factor x torch's own error against ref (ref in fp64), plus a floor.

    The floor scales with the reference's magnitude (floor x max(1, max|ref|)); without torch_out it is
    the whole tolerance.
    """
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(out).any() or torch.isnan(ref).any(), f"{what}: NaN in output (unwritten element?)"
    scale = max(1.0, float(ref.double().abs().nan_to_num(0, 0, 0).max())) if ref.numel() else 1.0
    budget = floor * scale + (factor * max_err(torch_out, ref) if torch_out is not None else 0.0)
    err = max_err(out, ref)
    if not err <= budget:
        diff = (out.double() - ref.double()).abs()
        idx = torch.nonzero(diff > budget)[:5].tolist()
        raise AssertionError(f"{what}: max abs error {err:.3e} > budget {budget:.3e}; first bad indices {idx}")


def make_qkv(b, hq, hkv, sq, skv, d, dtype, device, scale=1.0):
    q = (torch.randn(b, hq, sq, d, device=device) * scale).to(dtype)
    k = (torch.randn(b, hkv, skv, d, device=device) * scale).to(dtype)
    v = torch.randn(b, hkv, skv, d, device=device).to(dtype)
    return q, k, v


# Attention tolerance floors per dtype (on top of 2x SDPA's own error; see test_attention.check).
ATTENTION_FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def sdpa(q, k, v, causal, scale=None, math=False):
    """torch's SDPA (GQA allowed); math=True forces its math backend (the CPU flash kernel returns NaN for
    scale <= 0)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if math:
        with sdpa_kernel(SDPBackend.MATH):
            return sdpa(q, k, v, causal, scale)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)
