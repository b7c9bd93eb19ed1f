"""The compositions the cases compare against: fp64 references and torch's own low-precision baselines."""
import torch
import torch.nn.functional as F

from trifuse.reference.gemm import ACTIVATION_FNS

from .config import DEV, FP64

ACT = ACTIVATION_FNS  # trifuse.reference.gemm: one definition of each activation


def gemm_compose(a, b, bias, act, residual=None, keep=None, p=0.0, out_dtype=None):
    """dropout(act(a @ b + bias)) + residual in a's dtype (the baseline) or fp64 (the reference)."""
    pre = a @ b
    if bias is not None:
        pre = pre + bias
    y = ACT[act](pre)
    if keep is not None:
        y = torch.where(keep, y / (1.0 - p), torch.zeros_like(y))
    if out_dtype is not None and y.dtype != FP64:
        y = y.to(out_dtype)
    if residual is not None:
        y = y + residual
    return y


def attn_ref(q, k, v, causal, scale):
    """fp64 softmax(q k^T * scale, top-left causal) v, GQA by repeating k/v heads, one batch at a time."""
    B, Hq, Sq, _ = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    if B * Hq * Sq == 0 or Skv == 0:
        return torch.zeros(q.shape, dtype=q.dtype, device=q.device) + 0 * q.sum() + 0 * k.sum() + 0 * v.sum()
    g = Hq // Hkv
    outs = []
    for bi in range(B):
        kb = k[bi].repeat_interleave(g, 0)
        vb = v[bi].repeat_interleave(g, 0)
        s = q[bi] @ kb.transpose(-1, -2) * scale
        if causal:
            mask = torch.arange(Skv, device=q.device)[None, :] > torch.arange(Sq, device=q.device)[:, None]
            s = s.masked_fill(mask, float("-inf"))
        outs.append(torch.softmax(s, -1) @ vb)
    return torch.stack(outs)


def sdpa(q, k, v, causal, scale):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])


def keep_mask(seed, M, N, p):
    from trifuse.reference.dropout import keep_mask as km

    return km(seed, M, N, p, device=DEV)
