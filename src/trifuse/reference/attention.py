"""Attention oracles: SDPA's math in a high precision (optionally chunked over query blocks so long
sequences never hold S x S at once), and the naive composition that materializes the score matrix."""
from __future__ import annotations

import math

import torch


def _expand_kv(t: torch.Tensor, hq: int) -> torch.Tensor:
    return t.repeat_interleave(hq // t.shape[1], dim=1) if t.shape[1] != hq else t


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                  scale: float | None = None, dtype: torch.dtype = torch.float64,
                  chunk: int | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + top-left causal mask) v in `dtype`, GQA by repeating KV heads.

    chunk: process this many query rows at a time (fp32 references for S = 16k). Differentiable.
    """
    hq, sq, d = q.shape[1], q.shape[2], q.shape[3]
    skv = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qd, kd, vd = q.to(dtype), _expand_kv(k.to(dtype), hq), _expand_kv(v.to(dtype), hq)
    if skv == 0:
        return torch.zeros(q.shape, dtype=dtype, device=q.device)
    chunk = chunk or max(sq, 1)
    outs = []
    for start in range(0, sq, chunk):
        s = torch.matmul(qd[:, :, start:start + chunk], kd.transpose(-1, -2)) * scale
        if causal:
            rows = torch.arange(start, min(start + chunk, sq), device=q.device)[:, None]
            s = s.masked_fill(torch.arange(skv, device=q.device)[None, :] > rows, float("-inf"))
        outs.append(torch.matmul(torch.softmax(s, -1), vd))
    return torch.cat(outs, 2) if outs else torch.zeros(q.shape, dtype=dtype, device=q.device)


def attention_lse_ref(q: torch.Tensor, k: torch.Tensor, *, causal: bool = False, scale: float | None = None,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """log(sum_j exp(scale * q . k_j)) per query row over the visible keys, (B, Hq, Sq)."""
    hq, sq, d = q.shape[1], q.shape[2], q.shape[3]
    skv = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = torch.matmul(q.to(dtype), _expand_kv(k.to(dtype), hq).transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(sq, skv, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(s, -1)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None) -> torch.Tensor:
    """The textbook composition in the input dtype: S = q k^T * scale (+ mask), P = softmax(S), P v.
    S and P are materialized (B x Hq x Sq x Skv each), GQA by repeat_interleave copies of K and V."""
    hq, sq, d = q.shape[1], q.shape[2], q.shape[3]
    skv = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = torch.matmul(q, _expand_kv(k, hq).transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(sq, skv, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), _expand_kv(v, hq))


def attention_grads_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, *,
                        causal: bool = False, scale: float | None = None, dtype: torch.dtype = torch.float32,
                        chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of attention in `dtype` without autograd, query rows `chunk` at a time: memory
    B*Hq*chunk*Skv, so fp32 gradients of S = 16k sequences fit. GQA: dk/dv summed over each group."""
    b, hq, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qd, dod = q.to(dtype), do.to(dtype)
    kd, vd = _expand_kv(k.to(dtype), hq), _expand_kv(v.to(dtype), hq)
    dq = torch.zeros_like(qd)
    dk = torch.zeros_like(kd)
    dv = torch.zeros_like(vd)
    cols = torch.arange(skv, device=q.device)[None, :]
    for start in range(0, sq if skv else 0, chunk):
        stop = min(start + chunk, sq)
        s = torch.matmul(qd[:, :, start:stop], kd.transpose(-1, -2)) * scale
        if causal:
            s = s.masked_fill(cols > torch.arange(start, stop, device=q.device)[:, None], float("-inf"))
        p = torch.softmax(s, -1)
        del s
        do_c = dod[:, :, start:stop]
        dv += torch.matmul(p.transpose(-1, -2), do_c)
        dp = torch.matmul(do_c, vd.transpose(-1, -2))
        ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
        del dp, p
        dq[:, :, start:stop] = torch.matmul(ds, kd)
        dk += torch.matmul(ds.transpose(-1, -2), qd[:, :, start:stop])
    if hkv != hq and hkv:
        dk = dk.view(b, hkv, hq // hkv, skv, d).sum(2)
        dv = dv.view(b, hkv, hq // hkv, skv, d).sum(2)
    return dq, dk, dv
