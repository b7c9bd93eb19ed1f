"""LayerNorm / RMSNorm launchers: destination-passing launches of the kernels the rules in norm_configs.py
(forward) and norm_bwd_configs.py (backward) choose (the byte model is in norm_traffic.py).

Every tensor is 2-D (M, N) or 1-D (N,); x, residual, dy and dh_out may have any strides, outputs
(y, h, dx) are contiguous, weight/bias/input_bias are contiguous 1-D, mean/rstd are fp32 (M,).
"""
from __future__ import annotations

import torch

from ..kernels import norm as kf
from . import norm_bwd_configs as bc
from . import norm_configs as nc
from ._launch import cdiv, launcher


def _stride(t: torch.Tensor | None) -> tuple[int, int]:
    """A 2-D tensor's strides, (0, 0) when absent: stride() once, not stride(0), stride(1) (~0.5 us each)."""
    return t.stride() if t is not None else (0, 0)


def norm_fwd_into(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    input_bias: torch.Tensor | None, residual: torch.Tensor | None, eps: float, is_rms: bool,
    y: torch.Tensor, h: torch.Tensor | None, mean: torch.Tensor | None, rstd: torch.Tensor | None,
    max_fused_n: int | None = None,
) -> None:
    """y = norm(x + input_bias + residual) * weight + bias; h (needed iff residual) gets the sum.

    mean is unused (may be None) for RMSNorm. rstd None: inference, neither statistic is written.
    """
    M, N = x.shape
    if M == 0 or N == 0:
        return
    # Absent tensors are never read (their constexpr flag is off); x stands in for the pointer.
    args = (x, input_bias if input_bias is not None else x, residual if residual is not None else x,
            weight if weight is not None else x, bias if bias is not None else x, y,
            h if h is not None else y, mean if mean is not None else rstd if rstd is not None else y,
            rstd if rstd is not None else y)
    flags = {"IS_RMS": is_rms, "HAS_W": weight is not None, "HAS_B": bias is not None,
             "HAS_IB": input_bias is not None, "HAS_RES": residual is not None, "STORE_STATS": rstd is not None}
    launch = nc.fwd_launch(M, N, is_rms, residual is not None, x.element_size(), input_bias is not None, max_fused_n)
    rows = (M,) if launch.takes_m else ()
    launcher(launch.kernel)[launch.grid](*args, *rows, N, *_stride(x), *_stride(residual), eps, **flags,
                                         **launch.meta)


def norm_bwd_into(
    dy: torch.Tensor, dh_out: torch.Tensor | None, src: torch.Tensor, input_bias: torch.Tensor | None,
    weight: torch.Tensor | None, mean: torch.Tensor | None, rstd: torch.Tensor, is_rms: bool,
    dx: torch.Tensor, dweight: torch.Tensor | None = None, dbias: torch.Tensor | None = None,
    dinput_bias: torch.Tensor | None = None, max_fused_n: int | None = None,
    num_programs: int | None = None,
) -> None:
    """dx = dh; dweight/dbias/dinput_bias (each optional, any float dtype) get their column sums.

    src is the norm's input h, or x when input_bias is given (h = x + input_bias is recomputed).
    dh_out is the gradient of the returned h (add_* ops), added to dh.
    """
    M, N = src.shape
    grads = [g for g in (dweight, dbias, dinput_bias) if g is not None]
    if N == 0:
        return
    if M == 0:
        for g in grads:
            g.zero_()
        return
    vectors = (weight is not None) + (input_bias is not None) + len(grads)
    device = src.device
    launch = bc.bwd_launch(M, N, vectors, src.element_size(), is_rms, device, max_fused_n, num_programs)
    programs = launch.programs
    # One fp32 partial row per program and per gradient, in separate tensors (see kernels colsum);
    # colsum adds them in a fixed order. Absent gradients' buffers are never written (flags off).
    # Sizes as separate ints: a size tuple parses ~2 us slower.
    parts = [torch.empty(programs, N, dtype=torch.float32, device=device) for _ in grads]
    it = iter(parts)
    pdw, pdb, pdib = [next(it) if g is not None else dx for g in (dweight, dbias, dinput_bias)]
    args = (dy, dh_out if dh_out is not None else dy, src,
            input_bias if input_bias is not None else src, weight if weight is not None else src,
            mean if mean is not None else rstd, rstd, dx, pdw, pdb, pdib,
            M, N, *_stride(dy), *_stride(dh_out), *_stride(src))
    flags = {"IS_RMS": is_rms, "HAS_W": weight is not None, "HAS_IB": input_bias is not None,
             "HAS_DHO": dh_out is not None, "NEED_DW": dweight is not None, "NEED_DB": dbias is not None,
             "NEED_DIB": dinput_bias is not None}
    pdl = bool(grads) and bc.colsum_pdl_ok(device)
    launcher(launch.kernel)[(programs,)](*args, **flags, LAUNCH_DEPENDENTS=pdl, **launch.meta)
    if grads:
        k = len(grads)  # slots past k are compiled out of colsum: any tensor stands in
        # No constexpr of these kernels has a default: inductor (torch 2.11) drops an argument passed with its
        # default value from a user kernel's launch, and its launcher then misses a grid argument.
        pdl_meta = {"WAIT_PRIMARY": pdl, **({"launch_pdl": True} if pdl else {})}
        launcher(kf.colsum)[(cdiv(N, bc.COLSUM_BLOCK_C), k)](
            *(parts + parts[:1] * (3 - k)), *(grads + grads[:1] * (3 - k)), programs, N,
            K=k, BLOCK_P=bc.COLSUM_BLOCK_P, BLOCK_C=bc.COLSUM_BLOCK_C, num_warps=bc.COLSUM_WARPS, **pdl_meta,
        )
