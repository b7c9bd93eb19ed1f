"""Attention's program scheduling: the causal longest-first order over L2-sized chunks of (batch, KV head)
units, and the causal GQA backward's split of a KV group's query heads over dK/dV programs."""
import pytest
import torch
import triton
import triton.language as tl

from helpers import make_qkv, poison
from trifuse.kernels.attention_fwd import longest_first
from trifuse.ops import attention as oa
from trifuse.ops import attention_plan as plan
from trifuse.ops.attention import BwdConfig, FwdConfig, attention_bwd_into, attention_fwd_into
from trifuse.reference.attention import attention_ref


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_causal_longest_first_chunks_cover_the_grid(device, monkeypatch, chunk):
    # Causal grids are ordered longest block first over chunks of (batch, KV head) units (kernels'
    # longest_first); 3 units of a GQA pair in chunks of 1, 2 (a short last chunk), 3 and 5 (one chunk
    # larger than the grid) must still give every program one distinct block: poisoned outputs show a gap.
    monkeypatch.setattr(oa, "lpt_chunk", lambda causal, unit_bytes, unit_programs: chunk if causal else 1)
    q, k, v = make_qkv(3, 2, 1, 41, 37, 32, torch.float32, device)
    out, lse = poison(torch.empty_like(q)), poison(torch.empty(q.shape[:3], device=device))
    fwd_cfg, bwd_cfg = FwdConfig(16, 16, 4, 1), BwdConfig(16, 16, 16, 16, 4, 4, 1)
    attention_fwd_into(q, k, v, out, lse, True, 0.2, config=fwd_cfg)
    qd, kd, vd = (t.double().requires_grad_() for t in (q, k, v))
    ref = attention_ref(qd, kd, vd, causal=True, scale=0.2)
    torch.testing.assert_close(out.double(), ref.detach(), atol=2e-5, rtol=1e-5)
    do = torch.randn_like(out)
    dq, dk, dv = (poison(torch.empty_like(t)) for t in (q, k, v))
    attention_bwd_into(do, q, k, v, out, lse, dq, dk, dv, True, 0.2, config=bwd_cfg)
    for got, want in zip((dq, dk, dv), torch.autograd.grad(ref, (qd, kd, vd), do.double())):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("split", [1, 2, 3, 6])
def test_gqa_dkdv_head_split(device, monkeypatch, split, causal):
    # A KV group of 6 query heads whose dK/dV is split over 1, 2, 3 or 6 programs (fp32 partials summed in
    # a fixed order) gives the same gradients, and the same bits run to run.
    monkeypatch.setattr(oa, "dkdv_head_split", lambda group, programs, causal: split)
    q, k, v = make_qkv(2, 6, 1, 29, 35, 32, torch.float32, device)
    out, lse = torch.empty_like(q), torch.empty(q.shape[:3], device=device)
    attention_fwd_into(q, k, v, out, lse, causal, 0.3, config=FwdConfig(16, 16, 4, 1))
    qd, kd, vd = (t.double().requires_grad_() for t in (q, k, v))
    ref = attention_ref(qd, kd, vd, causal=causal, scale=0.3)
    do = torch.randn_like(out)
    grads = []
    for _ in range(2):
        dq, dk, dv = (poison(torch.empty_like(t)) for t in (q, k, v))
        attention_bwd_into(do, q, k, v, out, lse, dq, dk, dv, causal, 0.3,
                           config=BwdConfig(16, 16, 16, 16, 4, 4, 1))
        grads.append((dq, dk, dv))
    for got, want in zip(grads[0], torch.autograd.grad(ref, (qd, kd, vd), do.double())):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_dkdv_head_split_choice():
    below, target = oa.DKDV_SPLIT_BELOW, oa.DKDV_TARGET_PROGRAMS
    assert oa.dkdv_head_split(1, 16, True) == 1
    assert oa.dkdv_head_split(8, 16, False) == 1
    assert oa.dkdv_head_split(8, below, True) == 1
    assert oa.dkdv_head_split(8, target // 4, True) == 4
    assert oa.dkdv_head_split(6, target // 3 + 1, True) == 3
    assert oa.dkdv_head_split(6, 1, True) == 6


@triton.jit
def _program_order(out_ptr, units, chunk, num_blocks, CAUSAL: tl.constexpr):
    rank, unit = longest_first(tl.program_id(0), units, chunk, num_blocks, CAUSAL)
    tl.store(out_ptr + 2 * tl.program_id(0), rank)
    tl.store(out_ptr + 2 * tl.program_id(0) + 1, unit)


@pytest.mark.parametrize("units, chunk, num_blocks", [(1, 1, 1), (3, 2, 5), (7, 3, 4), (5, 8, 3), (16, 4, 16),
                                                      (13, 5, 7), (4, 1, 9)])
def test_longest_first_is_a_permutation(device, units, chunk, num_blocks):
    # Every (rank, unit) pair exactly once, whatever the sizes; with causal, a chunk's programs in rank
    # order (its longest blocks first) and the chunks one after another.
    for causal in (False, True):
        out = torch.full((units * num_blocks, 2), -1, dtype=torch.int32, device=device)
        _program_order[(units * num_blocks,)](out, units, chunk, num_blocks, CAUSAL=causal)
        pairs = out.tolist()
        assert sorted(map(tuple, pairs)) == sorted((r, u) for r in range(num_blocks) for u in range(units))
        if causal:
            keys = [(u // chunk, r) for r, u in pairs]
            assert keys == sorted(keys)
        else:
            assert pairs == [[r, u] for u in range(units) for r in range(num_blocks)]


def test_lpt_chunk_fits_the_l2_budget():
    lo, hi = plan.LPT_UNIT_PROGRAMS
    assert plan.lpt_chunk(False, 1, lo) == 1
    assert plan.lpt_chunk(True, plan.L2_CHUNK_BYTES * 4, lo) == 1
    assert plan.lpt_chunk(True, plan.L2_CHUNK_BYTES // 8, lo) == 8
    assert plan.lpt_chunk(True, plan.L2_CHUNK_BYTES // 8, hi - 1) == 8
    assert plan.lpt_chunk(True, plan.L2_CHUNK_BYTES // 8, hi) == 1
    assert plan.lpt_chunk(True, plan.L2_CHUNK_BYTES // 8, lo - 1) == 1
