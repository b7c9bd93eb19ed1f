"""Shared by the patch_model test files: non-trivial weights, the tiny decoder, and the comparison of patched,
unpatched and fp64 copies every numerics test makes."""
import copy

import torch

from helpers import assert_close_to_ref
from hf_standins import TinyModel
from trifuse.patch import patch_model

FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


EXPECTED = {"rms_norm": 6, "rms_norm_skipped": 0, "layer_norm": 2, "layer_norm_skipped": 0, "mlp": 2,
            "mlp_skipped": 0}


def randomize(model):
    """Non-trivial weights: norm scales around 1, biases around 0, Linear weights as initialised."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.3 + (0.0 if name.endswith("bias") else 1.0))
    return model


def tiny(device, **kw):
    return randomize(TinyModel(**kw)).to(device)


def check_matches(model, x, floor=None, **patch_kw):
    """Patched and unpatched copies against an fp64 copy: output and every parameter gradient within 2x
    the unpatched model's own error, plus a floor."""
    floor = floor or FLOOR[x.dtype]
    ref = copy.deepcopy(model).double()
    patched = copy.deepcopy(model)
    counts = patch_model(patched, **patch_kw)
    runs = []
    for m, inp in ((patched, x), (model, x), (ref, x.double())):
        inp = inp.detach().clone().requires_grad_()
        out = m(inp)
        runs.append((m, inp, out))
    dout = torch.randn_like(runs[0][2])
    grads = []
    for m, inp, out in runs:
        names, params = zip(*m.named_parameters())
        g = torch.autograd.grad(out, [inp, *params], dout.to(out.dtype))
        grads.append(dict(zip(("input", *names), g)))
    (_, _, ours), (_, _, theirs), (_, _, expect) = runs
    assert ours.dtype == theirs.dtype
    assert_close_to_ref(ours, expect, theirs, floor=floor, what="output")
    assert grads[0].keys() == grads[1].keys() == grads[2].keys()
    for k in grads[0]:
        assert_close_to_ref(grads[0][k], grads[2][k], grads[1][k], floor=floor, what=f"d{k}")
    return patched, counts
