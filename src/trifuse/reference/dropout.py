"""trifuse's dropout mask in plain torch ops: the oracle that kernels.activations.dropout_keep must match bit
for bit, on any device (int64 products wrap modulo 2**64, so their low and high 32 bits are exact)."""
from __future__ import annotations

import torch

_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_LOW32 = 0xFFFFFFFF


def _philox4x32(c0, c1, c2, c3, k0: int, k1: int, rounds: int = 10):
    """Philox4x32 (Salmon et al. 2011) as Triton's tl.philox computes it, on int64 tensors of 32-bit values."""
    for _ in range(rounds):
        prod_b, prod_a = _ROUND_B * c2, _ROUND_A * c0
        c0, c1, c2, c3 = (((prod_b >> 32) & _LOW32) ^ c1 ^ k0, prod_b & _LOW32,
                          ((prod_a >> 32) & _LOW32) ^ c3 ^ k1, prod_a & _LOW32)
        k0, k1 = (k0 + _KEY_A) & _LOW32, (k1 + _KEY_B) & _LOW32
    return c0, c1, c2, c3


def keep_mask(seed: int, M: int, N: int, p: float, device="cpu") -> torch.Tensor:
    """(M, N) bool: which elements trifuse's dropout keeps for this seed and p.

    seed: the kernel's int64 seed, or any int (its low 64 bits: trifuse.gemm passes an int seed so, and an
    integer tensor's value as int64).

    Element (r, c) takes uint16 draw c % 8 of Philox(counter = (c // 8, r, 0, 0), key = the seed's low and
    high 32 bits), its 128-bit output read as eight little-endian uint16; kept where draw >= round(p * 65536).
    """
    groups = (N + 7) // 8
    c0 = torch.arange(groups, device=device, dtype=torch.int64).expand(M, groups)
    c1 = torch.arange(M, device=device, dtype=torch.int64)[:, None].expand(M, groups)
    zero = torch.zeros(M, groups, device=device, dtype=torch.int64)
    seed = int(seed) & ((1 << 64) - 1)
    words = _philox4x32(c0, c1, zero, zero, seed & _LOW32, seed >> 32)
    draws = torch.stack([h for w in words for h in (w & 0xFFFF, w >> 16)], dim=-1).reshape(M, groups * 8)
    p32 = torch.tensor(p, dtype=torch.float32)
    threshold = int((p32 * 65536.0 + 0.5).item())  # fp32 arithmetic, as the kernel does it
    return draws[:, :N] >= threshold
